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

/// Each caller's commands (sent in order, adjacent), and where to send
/// their answer.
type Waiting = Vec<(Vec<Cmd>, oneshot::Sender<RedisResult<Answer>>)>;

/// What one caller's commands came to in a batch.
pub(crate) struct Answer {
    /// The answer to the caller's last command (`EXEC`'s, for a
    /// transaction), or the first error among its commands.
    pub(crate) value: Value,
    /// The answer to the command every batch ends with
    /// ([`Batched::ending_with`]), when there is one.
    #[cfg_attr(not(feature = "queue"), allow(dead_code))] // the queue's `WAIT`
    pub(crate) ending: Option<Value>,
}

/// A connection that sends concurrent commands as one pipeline.
#[derive(Clone)]
pub(crate) struct Batched {
    connection: Connection,
    waiting: Arc<Mutex<Waiting>>,
    /// Sent after the callers' commands in every batch (a `WAIT`: one for
    /// the batch rather than one per caller).
    ending: Option<Arc<Cmd>>,
}

impl Batched {
    pub(crate) fn new(connection: Connection) -> Self {
        Self {
            connection,
            waiting: Arc::default(),
            ending: None,
        }
    }

    /// Ends every batch with `command`: its answer comes back to every
    /// caller of the batch, in [`Answer::ending`].
    #[cfg_attr(not(feature = "queue"), allow(dead_code))] // the queue's `WAIT`
    pub(crate) fn ending_with(mut self, command: Cmd) -> Self {
        self.ending = Some(Arc::new(command));
        self
    }

    /// The connection itself, for commands that need no batching (start-up
    /// checks, inspection, loading a script).
    pub(crate) fn connection(&self) -> Connection {
        self.connection.clone()
    }

    /// Sends `command` with whatever else is waiting, and returns its answer.
    /// Must be called inside a tokio runtime.
    pub(crate) async fn query<T: FromRedisValue>(&self, command: Cmd) -> RedisResult<T> {
        let answer = self.send(vec![command]).await?;
        T::from_redis_value(answer.value).map_err(RedisError::from)
    }

    /// Sends `commands`, one after the other with nothing between them
    /// (`MULTI` … `EXEC`), with whatever else is waiting.
    pub(crate) async fn send(&self, commands: Vec<Cmd>) -> RedisResult<Answer> {
        let (answer, answered) = oneshot::channel();
        let first = {
            let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
            waiting.push((commands, answer));
            waiting.len() == 1
        };
        if first {
            tokio::spawn(self.clone().send_waiting());
        }
        answered.await.unwrap_or_else(|_| {
            Err(RedisError::from((
                ErrorKind::Io,
                "the batch was dropped before Redis answered",
            )))
        })
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
        for (commands, answer) in batch {
            answers.push((commands.len(), answer));
            for command in commands {
                pipeline.add_command(command);
            }
        }
        if let Some(ending) = &self.ending {
            pipeline.add_command(Cmd::clone(ending));
        }
        let mut connection = self.connection;
        match pipeline.query_async::<Vec<Value>>(&mut connection).await {
            Ok(mut values) => {
                let ending = self.ending.is_some().then(|| values.pop()).flatten();
                let mut values = values.into_iter();
                for (count, answer) in answers {
                    let mut group = values.by_ref().take(count);
                    // The first error among a caller's commands, or its last answer.
                    let mut result = Ok(Value::Nil);
                    for value in group.by_ref() {
                        result = value.extract_error();
                        if result.is_err() {
                            break;
                        }
                    }
                    group.for_each(drop);
                    let _ = answer.send(result.map(|value| Answer {
                        value,
                        ending: ending.clone(),
                    }));
                }
            }
            Err(error) => {
                for (_, answer) in answers {
                    let _ = answer.send(Err(error.clone()));
                }
            }
        }
    }
}
