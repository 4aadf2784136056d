//! Balancing through the real binary: the distribution across servers.

mod support;

use std::collections::HashMap;
use support::*;

#[test]
fn weights_5_3_2_over_1000_requests() {
    let backends: Vec<Backend> = ["a", "b", "c"]
        .iter()
        .map(|n| Backend::start(n, &[]))
        .collect();
    let servers: Vec<String> = backends
        .iter()
        .zip([5, 3, 2])
        .map(|(b, w)| format!("{}\nweight = {w}", server(b.addr)))
        .collect();
    let lb = Ringlb::start(&config(&servers, "balance = \"round_robin\"", ""));
    let mut c = Client::connect(lb.addr());
    let mut counts: HashMap<String, u32> = HashMap::new();
    for _ in 0..1000 {
        c.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        let r = c.response();
        *counts
            .entry(r.header("x-backend").unwrap().to_string())
            .or_default() += 1;
    }
    // One worker: smooth weighted round robin is exact.
    assert_eq!(counts["a"], 500, "{counts:?}");
    assert_eq!(counts["b"], 300, "{counts:?}");
    assert_eq!(counts["c"], 200, "{counts:?}");
}
