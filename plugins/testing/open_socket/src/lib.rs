//! Hostile test plugin: `init` succeeds, `derive` tries the network and always fails
//! the batch with the outcome of each attempt: a TCP connection to config `tcp_addr`
//! (default `127.0.0.1:9`), binding a UDP socket on `127.0.0.1:0`, and resolving
//! `localhost`. Each outcome reads `... failed: <error>` or `... SUCCEEDED ...`.

use std::net::{TcpStream, ToSocketAddrs, UdpSocket};

use dlink_plugin_sdk::{export_pipeline, Batch, KeyColumn, Keys, Pipeline};

struct OpenSocket;

impl Pipeline for OpenSocket {
    const KEYS: &'static [KeyColumn] = &[KeyColumn::i64("diasng_id")];

    fn derive(batch: &Batch, _keys: &mut Keys) -> Result<(), String> {
        let addr = batch.config().str_or("tcp_addr", "127.0.0.1:9")?;
        let tcp = match TcpStream::connect(addr) {
            Ok(s) => format!(
                "TCP connect to {addr} SUCCEEDED (local {:?})",
                s.local_addr()
            ),
            Err(e) => format!("TCP connect to {addr} failed: {e}"),
        };
        let udp = match UdpSocket::bind("127.0.0.1:0") {
            Ok(s) => format!("UDP bind SUCCEEDED ({:?})", s.local_addr()),
            Err(e) => format!("UDP bind failed: {e}"),
        };
        let dns = match ("localhost", 80).to_socket_addrs() {
            Ok(addrs) => format!("name lookup SUCCEEDED ({} address(es))", addrs.count()),
            Err(e) => format!("name lookup failed: {e}"),
        };
        Err(format!("open_socket: {tcp}; {udp}; {dns}"))
    }
}

export_pipeline!(OpenSocket);
