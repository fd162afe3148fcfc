//! Ports for nodes on 127.0.0.1.

use std::net::{TcpListener, UdpSocket};

/// A TCP port free on 127.0.0.1 right now (the kernel's pick for port 0). Another process may
/// take it before the caller binds it; on a test machine that is rare enough.
pub fn free_tcp_port() -> std::io::Result<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
}

/// A UDP port free on 127.0.0.1 right now (for a node's QUIC listener); see [`free_tcp_port`].
pub fn free_udp_port() -> std::io::Result<u16> {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
}
