//! One Redis server or a Redis Cluster, behind one connection type.
//!
//! A URL is one server; a comma-separated list of `redis://` (or
//! `rediss://`) node URLs is a Redis Cluster, through redis-rs' cluster
//! client. Every key of one namespace carries one hash tag, so each script
//! and each batch of commands goes to one node.

use std::time::Duration;

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::{ClusterClient, ClusterConfig};
use ::redis::cluster_async::ClusterConnection;
use ::redis::{Cmd, Pipeline, RedisFuture, Value};

use super::{CallError, DEFAULT_OPERATION_TIMEOUT};

/// Longer than any call waits: callers bound each call themselves.
const UNBOUNDED: Duration = Duration::from_secs(365 * 24 * 3600);

/// Where Redis is.
#[derive(Clone)]
#[allow(clippy::large_enum_variant)] // one per store or queue, made once
pub(crate) enum Target {
    Server(::redis::Client),
    Cluster(ClusterClient),
}

impl Target {
    /// A server URL, or a comma-separated list of cluster node URLs.
    pub(crate) fn open(url: &str) -> Result<Self, CallError> {
        if !url.contains(',') {
            return Ok(Self::Server(::redis::Client::open(url)?));
        }
        let nodes: Vec<&str> = url
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .collect();
        Ok(Self::Cluster(ClusterClient::builder(nodes).build()?))
    }

    /// A shared connection that connects on first use and reconnects by
    /// itself, with no response timeout of its own: every caller bounds
    /// each operation by its own deadline.
    pub(crate) fn lazy_connection(&self) -> Result<Connection, CallError> {
        match self {
            Self::Server(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(DEFAULT_OPERATION_TIMEOUT))
                    .set_response_timeout(None)
                    .set_number_of_retries(2)
                    .set_max_delay(Duration::from_millis(500));
                Ok(Connection::Server(ConnectionManager::new_lazy_with_config(
                    client.clone(),
                    config,
                )?))
            }
            Self::Cluster(client) => Ok(Connection::Cluster(
                client.get_pending_async_connection_with_config(cluster_config(
                    DEFAULT_OPERATION_TIMEOUT,
                )),
            )),
        }
    }

    /// A connection of its own (for blocking reads, which would hold up
    /// every other command on a shared one), with no response timeout of
    /// its own.
    #[cfg(feature = "queue")]
    pub(crate) async fn dedicated_connection(
        &self,
        connect_timeout: Duration,
    ) -> Result<Connection, CallError> {
        match self {
            Self::Server(client) => {
                // One quick retry: the worker itself retries a failed read.
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(connect_timeout))
                    .set_response_timeout(None)
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                Ok(Connection::Server(
                    ConnectionManager::new_with_config(client.clone(), config).await?,
                ))
            }
            Self::Cluster(client) => Ok(Connection::Cluster(
                client
                    .get_async_connection_with_config(cluster_config(connect_timeout))
                    .await?,
            )),
        }
    }
}

fn cluster_config(connect_timeout: Duration) -> ClusterConfig {
    ClusterConfig::new()
        .set_connection_timeout(connect_timeout)
        .set_response_timeout(UNBOUNDED)
}

/// A connection to a server or to a cluster.
#[derive(Clone)]
pub(crate) enum Connection {
    Server(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Server(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Server(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Server(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}
