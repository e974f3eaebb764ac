//! Fake HTTP servers on loopback for failure tests: one that accepts connections and never
//! answers, one that answers every request with fixed bytes and closes the connection.

#![allow(dead_code, unreachable_pub)] // Each test crate uses part of this module.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// `http://<addr>` of a server that accepts every connection and never answers.
pub async fn silent_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream); // Keep it open, say nothing.
        }
    });
    url(addr)
}

/// `http://<addr>` of a server that reads each request's headers, writes `response` and
/// closes the connection.
pub async fn scripted_server(response: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let response = response.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream.write_all(&response).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    url(addr)
}

fn url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}
