//! (c) compio 0.19 (io_uring driver), the ordinary owned-buffer API: TcpListener::accept,
//! AsyncRead::read(Vec), AsyncWrite::write_all; one task per client connection.
//! Default: compio's default ProactorBuilder (no setup flags). `--tuned`: SINGLE_ISSUER +
//! DEFER_TASKRUN. `--multishot`: multishot accept (TcpListener::incoming).

use compio::buf::{BufResult, IntoInner, IoBuf};
use compio::io::{AsyncRead, AsyncWriteExt};
use compio::net::{TcpListener, TcpStream};
use engines::{request_len, response_len, Args, Mode, RoundRobin, FIXED_RESPONSE};
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;

struct Pool {
    backends: Vec<SocketAddr>,
    idle: Vec<Vec<TcpStream>>,
    rr: RoundRobin,
}

fn main() {
    let args = Args::parse();
    engines::pin(args.cpu);
    let mut proactor = compio::driver::ProactorBuilder::new();
    if args.flag("tuned") {
        proactor.single_issuer(true).defer_taskrun(true);
    }
    let rt = compio::runtime::RuntimeBuilder::new()
        .with_proactor(proactor)
        .build()
        .expect("runtime");
    rt.block_on(serve(args));
}

async fn serve(args: Args) {
    let listener = TcpListener::from_std(engines::listen(args.listen)).expect("listener");
    let pool = Rc::new(RefCell::new(Pool {
        idle: args.backends.iter().map(|_| Vec::new()).collect(),
        rr: RoundRobin::new(args.backends.len().max(1)),
        backends: args.backends.clone(),
    }));
    let spawn = |stream: TcpStream| {
        let _ = stream.set_nodelay(true);
        compio::runtime::spawn(client(stream, args.mode, pool.clone())).detach();
    };
    if args.flag("multishot") {
        use futures_lite::StreamExt;
        let mut incoming = listener.incoming();
        while let Some(s) = incoming.next().await {
            if let Ok(s) = s {
                spawn(s);
            }
        }
    } else {
        loop {
            if let Ok((s, _)) = listener.accept().await {
                spawn(s);
            }
        }
    }
}

async fn client(mut c: TcpStream, mode: Mode, pool: Rc<RefCell<Pool>>) -> std::io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut resp: Vec<u8> = Vec::with_capacity(4096);
    loop {
        // Reads append to the Vec's spare capacity.
        let BufResult(n, b) = c.read(buf).await;
        buf = b;
        if n? == 0 {
            return Ok(());
        }
        let Some(len) = request_len(&buf) else {
            if buf.len() == buf.capacity() {
                buf.reserve(buf.len());
            }
            continue;
        };
        match mode {
            Mode::Fixed => {
                let BufResult(r, _) = c.write_all(FIXED_RESPONSE).await;
                r?;
            }
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
                // Send the request head out of `buf` (owned buffers: pass it and take it back).
                let BufResult(r, slice) = up.write_all(buf.slice(..len)).await;
                buf = slice.into_inner();
                r?;
                resp.clear();
                let total = loop {
                    let BufResult(n, r) = up.read(resp).await;
                    resp = r;
                    if n? == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                    if let Some(t) = response_len(&resp) {
                        break t;
                    }
                    if resp.len() == resp.capacity() {
                        resp.reserve(resp.len());
                    }
                };
                pool.borrow_mut().idle[b].push(up);
                let BufResult(r, s) = c.write_all(resp.slice(..total)).await;
                resp = s.into_inner();
                r?;
            }
        }
        buf.drain(..len);
    }
}
