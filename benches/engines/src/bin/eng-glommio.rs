//! (a) glommio 0.9 as ringlb uses it: one LocalExecutor pinned with Placement::Fixed,
//! io_memory 512 KiB, ring_depth 256, preempt_timer 50 ms; TcpListener/TcpStream with
//! futures-lite read/write_all; one task per client connection.

use engines::{request_len, response_len, Args, Mode, RoundRobin, FIXED_RESPONSE};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorBuilder, Placement};
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

struct Pool {
    backends: Vec<SocketAddr>,
    idle: Vec<Vec<TcpStream>>,
    rr: RoundRobin,
}

fn main() {
    let args = Args::parse();
    let cpu = args.cpu;
    LocalExecutorBuilder::new(Placement::Fixed(cpu))
        .io_memory(512 << 10)
        .ring_depth(256)
        .preempt_timer(Duration::from_millis(50))
        .spawn(move || async move { serve(args).await })
        .expect("executor")
        .join()
        .unwrap();
}

async fn serve(args: Args) {
    let listener = TcpListener::bind(args.listen).expect("bind");
    let pool = Rc::new(RefCell::new(Pool {
        idle: args.backends.iter().map(|_| Vec::new()).collect(),
        rr: RoundRobin::new(args.backends.len().max(1)),
        backends: args.backends.clone(),
    }));
    loop {
        let Ok(stream) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let pool = pool.clone();
        glommio::spawn_local(client(stream, args.mode, pool)).detach();
    }
}

async fn client(mut c: TcpStream, mode: Mode, pool: Rc<RefCell<Pool>>) -> std::io::Result<()> {
    let mut buf = vec![0u8; 4096];
    let mut have = 0;
    let mut resp = vec![0u8; 4096];
    loop {
        let n = c.read(&mut buf[have..]).await?;
        if n == 0 {
            return Ok(());
        }
        have += n;
        let Some(len) = request_len(&buf[..have]) else {
            continue;
        };
        match mode {
            Mode::Fixed => c.write_all(FIXED_RESPONSE).await?,
            Mode::Proxy => {
                let (b, conn, addr) = {
                    let mut p = pool.borrow_mut();
                    let b = p.rr.pick();
                    (b, p.idle[b].pop(), p.backends[b])
                };
                let mut up = match conn {
                    Some(s) => s,
                    None => {
                        let s = TcpStream::connect(addr).await?;
                        let _ = s.set_nodelay(true);
                        s
                    }
                };
                up.write_all(&buf[..len]).await?;
                let mut got = 0;
                let total = loop {
                    let n = up.read(&mut resp[got..]).await?;
                    if n == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                    got += n;
                    if let Some(t) = response_len(&resp[..got]) {
                        break t;
                    }
                    if got == resp.len() {
                        resp.resize(got * 2, 0);
                    }
                };
                pool.borrow_mut().idle[b].push(up);
                c.write_all(&resp[..total]).await?;
            }
        }
        buf.copy_within(len..have, 0);
        have -= len;
    }
}
