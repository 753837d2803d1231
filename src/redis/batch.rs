//! Commands from concurrent deliveries, sent to Redis together.
//!
//! Every delivery needs one or two Redis commands. Sent one by one, each
//! costs a write on the receiver and a read and a write on Redis; sent
//! together, a batch of them costs one of each. The first command of a batch
//! starts a task that yields once (every delivery ready to run adds its
//! command meanwhile), then sends what has gathered as one pipeline. An idle
//! receiver sends each command at once; a busy one sends them in batches.

use std::sync::{Arc, Mutex, PoisonError};

use super::Connection;
use redis::{
    Cmd, ErrorKind, FromRedisValue, RedisError, RedisResult, Script, ServerErrorKind, Value,
};
use tokio::sync::oneshot;

type Answer = oneshot::Sender<RedisResult<Value>>;

/// What the next pipeline sends.
#[derive(Default)]
struct Waiting {
    commands: Vec<(Cmd, Answer)>,
    /// Callers of `wait_for_replicas`: one `WAIT` at the pipeline's end
    /// answers them all, since it covers every write sent before it.
    replicas: Vec<Answer>,
    wait: (u32, u64),
}

impl Waiting {
    fn is_empty(&self) -> bool {
        self.commands.is_empty() && self.replicas.is_empty()
    }
}

/// A connection that sends concurrent commands as one pipeline.
#[derive(Clone)]
pub(crate) struct Batched {
    connection: Connection,
    waiting: Arc<Mutex<Waiting>>,
}

impl Batched {
    pub(crate) fn new(connection: Connection) -> Self {
        Self {
            connection,
            waiting: Arc::default(),
        }
    }

    /// The connection itself, for commands that need no batching (start-up
    /// checks, inspection, loading a script).
    pub(crate) fn connection(&self) -> Connection {
        self.connection.clone()
    }

    /// Sends `command` with whatever else is waiting, and returns its answer.
    /// Must be called inside a tokio runtime.
    pub(crate) async fn query<T: FromRedisValue>(&self, command: Cmd) -> RedisResult<T> {
        self.add(|waiting, answer| waiting.commands.push((command, answer)))
            .await
    }

    /// How many replicas confirmed every write this connection sent before
    /// (Redis `WAIT`), waiting at most `deadline`. Concurrent callers share
    /// one `WAIT`.
    pub(crate) async fn wait_for_replicas(
        &self,
        replicas: u32,
        deadline: std::time::Duration,
    ) -> RedisResult<u64> {
        let millis = u64::try_from(deadline.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        self.add(|waiting, answer| {
            waiting.wait = (replicas, millis);
            waiting.replicas.push(answer);
        })
        .await
    }

    async fn add<T: FromRedisValue>(
        &self,
        push: impl FnOnce(&mut Waiting, Answer),
    ) -> RedisResult<T> {
        let (answer, answered) = oneshot::channel();
        let first = {
            let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
            let first = waiting.is_empty();
            push(&mut waiting, answer);
            first
        };
        if first {
            tokio::spawn(self.clone().send_waiting());
        }
        let value = answered.await.unwrap_or_else(|_| {
            Err(RedisError::from((
                ErrorKind::Io,
                "the batch was dropped before Redis answered",
            )))
        })?;
        T::from_redis_value(value).map_err(RedisError::from)
    }

    /// `EVALSHA` of `script`, loading the script first where Redis does not
    /// know it (after a restart or `SCRIPT FLUSH`). `keys_and_args` adds the
    /// number of keys, the keys and the arguments.
    pub(crate) async fn invoke<T: FromRedisValue>(
        &self,
        script: &Script,
        keys_and_args: impl Fn(&mut Cmd),
    ) -> RedisResult<T> {
        let command = || {
            let mut command = redis::cmd("EVALSHA");
            command.arg(script.get_hash());
            keys_and_args(&mut command);
            command
        };
        match self.query(command()).await {
            Err(error) if error.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                script.load_async(&mut self.connection()).await?;
                self.query(command()).await
            }
            answer => answer,
        }
    }

    async fn send_waiting(self) {
        // Deliveries that are ready to run add their commands meanwhile.
        tokio::task::yield_now().await;
        let batch =
            std::mem::take(&mut *self.waiting.lock().unwrap_or_else(PoisonError::into_inner));
        let mut pipeline = redis::pipe();
        pipeline.ignore_errors();
        let mut answers = Vec::with_capacity(batch.commands.len());
        for (command, answer) in batch.commands {
            pipeline.add_command(command);
            answers.push(answer);
        }
        if !batch.replicas.is_empty() {
            pipeline.cmd("WAIT").arg(batch.wait.0).arg(batch.wait.1);
        }
        let mut connection = self.connection;
        match pipeline.query_async::<Vec<Value>>(&mut connection).await {
            Ok(mut values) => {
                if !batch.replicas.is_empty() {
                    let confirmed = values.pop().map(Value::extract_error);
                    for answer in batch.replicas {
                        let _ = answer.send(confirmed.clone().unwrap_or(Ok(Value::Nil)));
                    }
                }
                for (answer, value) in answers.into_iter().zip(values) {
                    let _ = answer.send(value.extract_error());
                }
            }
            Err(error) => {
                for answer in answers.into_iter().chain(batch.replicas) {
                    let _ = answer.send(Err(error.clone()));
                }
            }
        }
    }
}
