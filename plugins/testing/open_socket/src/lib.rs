use std::net::{TcpStream, ToSocketAddrs, UdpSocket};

use dlink_plugin_sdk::{export_pipeline, Batch, Error, Keys, Pipeline, PipelineInfo};

/// `[plugin.config]`: `tcp_addr` (default `127.0.0.1:9`).
#[derive(serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    tcp_addr: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            tcp_addr: "127.0.0.1:9".into(),
        }
    }
}

struct OpenSocket(Config);

impl Pipeline for OpenSocket {
    type Config = Config;

    fn init(config: Config, _pipeline: &PipelineInfo) -> Result<Self, Error> {
        Ok(OpenSocket(config))
    }

    fn derive(&mut self, _batch: &Batch, _keys: &mut Keys) -> Result<(), Error> {
        let addr = &self.0.tcp_addr;
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
        Err(format!("open_socket: {tcp}; {udp}; {dns}").into())
    }
}

export_pipeline!(OpenSocket);
