//! [`Connection`]: where a client command connects and how, the flags
//! every command but `start` takes.
//!
//! A leaf of `cli`: uses only the client crate.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use streamdb_client::{Client, ConnectOptions};

/// Where a client command connects, and how (the flags every command but
/// `start` takes).
#[derive(Args, Debug)]
pub(super) struct Connection {
    /// Server URL: http://host:port, or https:// for a server with TLS.
    #[arg(long, env = "STREAMDB_SERVER", default_value = "http://127.0.0.1:8080")]
    pub(super) server: String,
    /// Bearer token for servers started with --auth-token.
    #[arg(long, env = "STREAMDB_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// PEM CA certificate to trust for https:// servers (private CA or
    /// self-signed).
    #[arg(long, env = "STREAMDB_CA_FILE")]
    ca_file: Option<PathBuf>,
}

impl Connection {
    pub(super) async fn connect(&self) -> Result<Client> {
        let ca_pem = match &self.ca_file {
            Some(p) => Some(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?),
            None => None,
        };
        let opts = ConnectOptions {
            token: self.token.clone(),
            ca_pem,
            ..ConnectOptions::default()
        };
        Ok(Client::connect_with(&self.server, opts).await?)
    }
}
