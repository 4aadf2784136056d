//! Client address affinity (nginx `ip_hash`): the server is a function of the client IP and
//! the configured weights only, so it is the same on every call, core and ringlb node.
//!
//! Differences from nginx, on purpose:
//! - The whole address is hashed (4 bytes for IPv4, 16 for IPv6) with [`stable_hash`]; nginx
//!   hashes only the first three octets of an IPv4 address, which sends a whole /24 (often one
//!   NAT or office) to one server. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, from a
//!   dual-stack listener) hashes as the IPv4 address.
//! - When the chosen server is not usable, after nginx's 20 rehashes the next usable server in
//!   table order is taken instead of falling back to round robin, so the client still lands
//!   on one server across cores and nodes.
//!
//! The mapping uses configured weights, not effective ones: slow start does not move clients.

use std::net::IpAddr;

use super::{stable_hash, Member, ServerView, Tier, TierView, Weighted};

/// `ip_hash` tables of one upstream; identical on every core.
#[derive(Clone, Debug)]
pub struct IpHash {
    /// Indexed by `Tier as usize`.
    tables: [Weighted; 2],
    members: usize,
}

impl IpHash {
    pub(crate) fn new(members: &[Member]) -> Self {
        IpHash {
            tables: [
                Weighted::new(members, Tier::Primary),
                Weighted::new(members, Tier::Backup),
            ],
            members: members.len(),
        }
    }

    pub(crate) fn members(&self) -> usize {
        self.members
    }

    pub(crate) fn pick<V: ServerView>(&self, view: &TierView<'_, V>, ip: IpAddr) -> Option<usize> {
        self.tables[view.tier() as usize].pick(view, hash_ip(ip))
    }
}

fn hash_ip(ip: IpAddr) -> u64 {
    match ip.to_canonical() {
        IpAddr::V4(a) => stable_hash(&a.octets()),
        IpAddr::V6(a) => stable_hash(&a.octets()),
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use super::super::tests::{members, TestView};
    use super::super::{Algorithm, Balancer, PickCtx};

    fn ctx(ip: IpAddr) -> PickCtx<'static> {
        PickCtx {
            client_ip: ip,
            key: None,
        }
    }

    fn v4(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(n))
    }

    #[test]
    fn same_client_same_server_on_every_instance_and_core() {
        let weights = [1, 2, 3, 1];
        let view = TestView::with_weights(&weights);
        let mut a = Balancer::new(&Algorithm::IpHash, &members(&weights), 0, 1);
        let mut b = Balancer::new(&Algorithm::IpHash, &members(&weights), 5, 99);
        for n in 0..1000 {
            let ip = v4(0x0A00_0000 + n * 7919);
            let first = a.pick(&view, &ctx(ip));
            assert_eq!(first, a.pick(&view, &ctx(ip)));
            assert_eq!(first, b.pick(&view, &ctx(ip)));
        }
    }

    #[test]
    fn mapped_ipv6_hashes_as_ipv4() {
        let view = TestView::with_weights(&[1; 16]);
        let mut b = Balancer::new(&Algorithm::IpHash, &members(&[1; 16]), 0, 0);
        for n in 0..100 {
            let a = Ipv4Addr::from(0xC0A8_0000 + n);
            assert_eq!(
                b.pick(&view, &ctx(IpAddr::V4(a))),
                b.pick(&view, &ctx(IpAddr::V6(a.to_ipv6_mapped())))
            );
        }
    }

    #[test]
    fn whole_ipv4_address_is_hashed() {
        // nginx would send all of 10.1.2.0/24 to one server.
        let view = TestView::with_weights(&[1; 8]);
        let mut b = Balancer::new(&Algorithm::IpHash, &members(&[1; 8]), 0, 0);
        let mut seen = [false; 8];
        for n in 0..=255 {
            seen[b.pick(&view, &ctx(v4(0x0A01_0200 + n))).unwrap()] = true;
        }
        assert_eq!(seen, [true; 8]);
    }

    #[test]
    fn distribution_follows_configured_weights() {
        let weights = [1, 3];
        let view = TestView::with_weights(&weights);
        let mut b = Balancer::new(&Algorithm::IpHash, &members(&weights), 0, 0);
        let mut counts = [0u32; 2];
        for n in 0..40_000 {
            counts[b.pick(&view, &ctx(v4(n))).unwrap()] += 1;
        }
        assert!((9_400..10_600).contains(&counts[0]), "{counts:?}");
    }

    #[test]
    fn unusable_server_moves_only_its_clients_deterministically() {
        let view = TestView::with_weights(&[1; 5]);
        let mut down = view.clone();
        down.usable[2] = false;
        let mut a = Balancer::new(&Algorithm::IpHash, &members(&[1; 5]), 0, 0);
        let mut b = Balancer::new(&Algorithm::IpHash, &members(&[1; 5]), 3, 7);
        for n in 0..2000 {
            let ip = IpAddr::V6(Ipv6Addr::from(
                0x2001_0db8_u128 << 96 | u128::from(n as u32),
            ));
            let before = a.pick(&view, &ctx(ip)).unwrap();
            let after = a.pick(&down, &ctx(ip)).unwrap();
            assert_ne!(after, 2);
            if before != 2 {
                assert_eq!(before, after);
            }
            assert_eq!(after, b.pick(&down, &ctx(ip)).unwrap());
        }
    }
}
