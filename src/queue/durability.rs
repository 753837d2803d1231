//! What the queue's Redis promises about a write it acknowledged: read at
//! connect, and logged (or refused) where a `202` could be forgotten.

use std::collections::HashMap;
use std::fmt;

/// The settings of the queue's Redis that decide whether an acknowledged
/// event survives a restart, a full memory or a failover, as
/// [`RedisQueue::durability`](super::RedisQueue::durability) read them.
/// `None` where Redis would not say (managed services often refuse
/// `CONFIG GET`).
///
/// ```
/// use ltvboost_webhooks::queue::Durability;
///
/// let safe = Durability::default();
/// assert!(safe.risks().iter().any(|risk| risk.setting == "appendonly"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Durability {
    /// `appendonly`: whether every write goes to the append-only file.
    pub appendonly: Option<bool>,
    /// `appendfsync`: `always`, `everysec` or `no`.
    pub appendfsync: Option<String>,
    /// `maxmemory-policy`: what Redis does when its memory is full.
    pub maxmemory_policy: Option<String>,
    /// `master` or `slave`, from `INFO replication`.
    pub role: Option<String>,
    /// Replicas connected to this server, from `INFO replication`.
    pub connected_replicas: Option<u64>,
}

/// One setting under which a `202` can be forgotten, and what it risks.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Risk {
    /// The setting, as Redis names it (`appendonly`, `maxmemory-policy`, …).
    pub setting: &'static str,
    /// What can happen to an acknowledged event under it.
    pub risk: String,
    /// Whether it is certain (the setting was read and is unsafe) rather
    /// than unknown (Redis would not say).
    pub certain: bool,
}

impl fmt::Display for Risk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.setting, self.risk)
    }
}

impl Durability {
    /// Reads the settings; a refused `CONFIG GET` or `INFO` leaves `None`.
    /// `INFO` runs in a script keyed by the queue's stream, so that on a
    /// Redis Cluster it reads the node that holds the queue.
    pub(super) async fn read(
        connection: &mut (impl redis::aio::ConnectionLike + Send),
        stream: &str,
    ) -> Self {
        let mut config = redis::cmd("CONFIG");
        config
            .arg("GET")
            .arg("appendonly")
            .arg("appendfsync")
            .arg("maxmemory-policy");
        let settings: HashMap<String, String> = config
            .query_async(connection)
            .await
            .map_err(|error| tracing::debug!(%error, "CONFIG GET refused"))
            .unwrap_or_default();
        let mut info = super::scripts::script!(super::scripts::INFO).prepare_invoke();
        info.key(stream);
        let info: String = info.invoke_async(connection).await.unwrap_or_default();
        let field = |name: &str| {
            info.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .map(|value| value.trim().to_owned())
        };
        Self {
            appendonly: settings.get("appendonly").map(|v| v == "yes"),
            appendfsync: settings.get("appendfsync").cloned(),
            maxmemory_policy: settings.get("maxmemory-policy").cloned(),
            role: field("role"),
            connected_replicas: field("connected_slaves").and_then(|n| n.parse().ok()),
        }
    }

    /// Each setting under which an event answered `202` can be lost or
    /// handled twice, worst first. Empty for `appendonly yes`,
    /// `appendfsync always`, `maxmemory-policy noeviction` on a primary.
    pub fn risks(&self) -> Vec<Risk> {
        let mut risks = Vec::new();
        let mut add = |setting, certain, risk: &str| {
            risks.push(Risk {
                setting,
                risk: risk.to_owned(),
                certain,
            });
        };
        match self.appendonly {
            Some(true) => {}
            Some(false) => add(
                "appendonly",
                true,
                "no: a Redis restart forgets every event answered 202 since the last snapshot, \
                 and rolls the consumer group back so that handled events run again",
            ),
            None => add(
                "appendonly",
                false,
                "unknown (CONFIG GET refused): check that the server persists every write",
            ),
        }
        if self.appendonly == Some(true) {
            match self.appendfsync.as_deref() {
                Some("no") => add(
                    "appendfsync",
                    true,
                    "no: a machine crash loses the events answered 202 that the OS had not \
                     yet written to disk",
                ),
                Some("everysec") => add(
                    "appendfsync",
                    true,
                    "everysec: a machine crash (not a Redis crash) loses up to a second of \
                     events answered 202",
                ),
                _ => {}
            }
        }
        match self.maxmemory_policy.as_deref() {
            Some("noeviction") => {}
            Some(_) => add(
                "maxmemory-policy",
                true,
                "evicts keys when memory is full: an evicted entry is an event lost, an evicted \
                 dedupe key an event handled twice; set noeviction",
            ),
            None => add(
                "maxmemory-policy",
                false,
                "unknown (CONFIG GET refused): check that it is noeviction",
            ),
        }
        if self.role.as_deref() == Some("slave") {
            add(
                "role",
                true,
                "a replica: it refuses writes; point the queue at the primary",
            );
        }
        if self.connected_replicas.unwrap_or(0) > 0 {
            add(
                "replication",
                true,
                "asynchronous: a failover loses the events answered 202 that had not reached \
                 the replica; RedisQueue::wait_for_replicas makes each 202 wait for them",
            );
        }
        risks
    }
}
