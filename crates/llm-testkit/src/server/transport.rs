//! The accept loop and connections, with a reset that drops a connection mid-body.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::Request;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};

pub(crate) async fn accept_loop(
    listener: TcpListener,
    router: Router,
    mut stop: watch::Receiver<bool>,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else { continue };
                let _ = tcp.set_nodelay(true);
                connections.spawn(serve_connection(tcp, router.clone(), stop.clone()));
            }
            // Reap finished connections so a long run does not accumulate handles.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    connections.shutdown().await;
}

/// Lets a handler drop its own connection (the `reset` fault).
#[derive(Clone, Debug)]
pub(crate) struct ConnControl {
    pub(crate) kill: Arc<Notify>,
    pub(crate) killed: Arc<AtomicBool>,
}

impl ConnControl {
    pub(crate) fn reset(&self) {
        self.killed.store(true, Ordering::SeqCst);
        self.kill.notify_one();
    }
}

pub(crate) async fn serve_connection(
    tcp: TcpStream,
    router: Router,
    mut stop: watch::Receiver<bool>,
) {
    let control = ConnControl {
        kill: Arc::new(Notify::new()),
        killed: Arc::new(AtomicBool::new(false)),
    };
    let io = ResettableIo {
        tcp,
        killed: control.killed.clone(),
    };
    let kill = control.kill.clone();
    let service = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(control.clone());
        let mut router = router.clone();
        tower_service::Service::call(&mut router, req)
    });
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(io), service);
    // Dropping the connection closes the socket (with an RST after a `reset` fault).
    tokio::select! {
        _ = conn => {}
        _ = kill.notified() => {}
        _ = stop.changed() => {}
    }
}

/// The connection's socket; after a `reset` fault it closes with an RST instead of a FIN.
#[derive(Debug)]
pub(crate) struct ResettableIo {
    pub(crate) tcp: TcpStream,
    pub(crate) killed: Arc<AtomicBool>,
}

impl Drop for ResettableIo {
    fn drop(&mut self) {
        if self.killed.load(Ordering::SeqCst) {
            let _ = self.tcp.set_zero_linger();
        }
    }
}

impl AsyncRead for ResettableIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResettableIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}
