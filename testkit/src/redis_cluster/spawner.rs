//! A thread that starts a cluster's redis-server processes and lives exactly as long as the cluster.
//!
//! The servers are started with "die with your parent", and on Linux the parent is the *thread* that forked
//! them. A test that restarts a node from tokio's blocking pool would otherwise see the node SIGKILLed a few
//! seconds later, when that pool thread retires. Forking from one thread owned by the cluster ties the servers'
//! lives to the cluster's (and still to the test process's: the thread dies with it).

use std::process::{Child, Command};
use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::redis::kill_with_parent;

type Request = (Command, mpsc::Sender<std::io::Result<Child>>);

pub(crate) struct Spawner {
    requests: Option<mpsc::Sender<Request>>,
    thread: Option<JoinHandle<()>>,
}

impl Spawner {
    pub(crate) fn new() -> Self {
        let (requests, incoming) = mpsc::channel::<Request>();
        let thread = std::thread::Builder::new()
            .name("redis-cluster-spawner".into())
            .spawn(move || {
                for (mut command, reply) in incoming {
                    kill_with_parent(&mut command);
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("start the redis-cluster spawner thread");
        Self {
            requests: Some(requests),
            thread: Some(thread),
        }
    }

    /// Starts `command` from the spawner thread.
    pub(crate) fn spawn(&self, command: Command) -> std::io::Result<Child> {
        let (reply, answer) = mpsc::channel();
        let gone = || std::io::Error::other("the redis-cluster spawner thread is gone");
        self.requests
            .as_ref()
            .ok_or_else(gone)?
            .send((command, reply))
            .map_err(|_| gone())?;
        answer.recv().map_err(|_| gone())?
    }
}

impl Drop for Spawner {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop.
        self.requests.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
