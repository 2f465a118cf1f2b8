//! A TCP proxy a test can cut, to take a dependency "down" for one service without
//! stopping the shared server. Cutting closes every open connection and closes the port
//! (connections are refused, as with a stopped server); restoring opens it again.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct TcpProxy {
    pub port: u16,
    up: Arc<watch::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    pub async fn start(target: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (up, _) = watch::channel(true);
        let up = Arc::new(up);
        let task = tokio::spawn(serve(listener, addr, target, up.clone()));
        Self {
            port: addr.port(),
            up,
            task,
        }
    }

    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    pub fn restore(&self) {
        self.up.send_replace(true);
    }
}

async fn serve(
    listener: TcpListener,
    addr: SocketAddr,
    target: &'static str,
    up: Arc<watch::Sender<bool>>,
) {
    let mut state = up.subscribe();
    let mut listener = Some(listener);
    loop {
        match &listener {
            Some(open) => {
                tokio::select! {
                    accepted = open.accept() => {
                        let Ok((mut inbound, _)) = accepted else { continue };
                        let mut cut = up.subscribe();
                        tokio::spawn(async move {
                            let Ok(mut outbound) = TcpStream::connect(target).await else { return };
                            tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                                _ = cut.wait_for(|up| !*up) => {}
                            }
                        });
                    }
                    _ = state.wait_for(|up| !*up) => listener = None,
                }
            }
            None => {
                let _ = state.wait_for(|up| *up).await;
                listener = Some(TcpListener::bind(addr).await.unwrap());
            }
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
