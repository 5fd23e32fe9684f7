//! [`Tasks`]: the shutdown tree. Every background task (engine loops,
//! subscriptions, SSE sessions, long-polls, sweepers) is spawned through a
//! `Tasks` with a name; each `Tasks` has a cancellation token that is a
//! child of its parent's, so cancelling a node cancels everything below it,
//! and [`Tasks::shutdown`] waits until every task it spawned has ended.
//!
//! Tasks are cooperative: a loop selects on [`Tasks::cancelled`] where it
//! would otherwise sleep, so work in progress (a flush, a commit) finishes
//! before the task returns.

use std::future::Future;

use tokio_util::task::TaskTracker;

pub use tokio_util::sync::CancellationToken;

/// A node of the shutdown tree.
#[derive(Clone, Debug, Default)]
pub struct Tasks {
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Tasks {
    /// A root of its own.
    pub fn new() -> Self {
        Self::default()
    }

    /// A node below this one: cancelled with it, drained on its own.
    pub fn child(&self) -> Self {
        Self {
            token: self.token.child_token(),
            tracker: TaskTracker::new(),
        }
    }

    /// This node's token (cancelled with every ancestor).
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Resolves once this node (or an ancestor) is cancelled.
    pub async fn cancelled(&self) {
        self.token.cancelled().await
    }

    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Runs `task` in the background under `name`, tracked until it ends.
    pub fn spawn<F>(&self, name: &'static str, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(async move {
            tracing::debug!(task = name, "background task started");
            task.await;
            tracing::debug!(task = name, "background task ended");
        });
    }

    /// Cancels this node and everything below it, then waits for the tasks
    /// spawned here to end.
    pub async fn shutdown(&self) {
        self.token.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// Tasks spawned here and still running.
    pub fn running(&self) -> usize {
        self.tracker.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn cancelling_a_node_cancels_its_children_and_waits_for_its_tasks() {
        let root = Tasks::new();
        let child = root.child();
        let finished = Arc::new(AtomicBool::new(false));
        let done = finished.clone();
        let tasks = child.clone();
        child.spawn("worker", async move {
            tasks.cancelled().await;
            // Work in progress completes after the cancellation.
            tokio::time::sleep(Duration::from_secs(1)).await;
            done.store(true, Ordering::SeqCst);
        });
        assert_eq!(child.running(), 1);
        let sibling = root.child();
        root.token().cancel();
        assert!(sibling.is_cancelled() && child.is_cancelled());
        child.shutdown().await;
        assert!(finished.load(Ordering::SeqCst));
        assert_eq!(child.running(), 0);
    }

    #[tokio::test]
    async fn a_child_cancelled_alone_leaves_its_parent_running() {
        let root = Tasks::new();
        let child = root.child();
        child.shutdown().await;
        assert!(child.is_cancelled());
        assert!(!root.is_cancelled());
    }
}
