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

type Waiting = Vec<(Cmd, oneshot::Sender<RedisResult<Value>>)>;

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
        let (answer, answered) = oneshot::channel();
        let first = {
            let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
            waiting.push((command, answer));
            waiting.len() == 1
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
        let mut answers = Vec::with_capacity(batch.len());
        for (command, answer) in batch {
            pipeline.add_command(command);
            answers.push(answer);
        }
        let mut connection = self.connection;
        match pipeline.query_async::<Vec<Value>>(&mut connection).await {
            Ok(values) => {
                for (answer, value) in answers.into_iter().zip(values) {
                    let _ = answer.send(value.extract_error());
                }
            }
            Err(error) => {
                for answer in answers {
                    let _ = answer.send(Err(error.clone()));
                }
            }
        }
    }
}
