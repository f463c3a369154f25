//! The locks jobs hold on the resources they touch (DESIGN decision 1).
//!
//! Each resource has a queue of the jobs that name it, in journal order: a job is
//! queued on every resource of its spec at once, inside the transaction that
//! journals it, so the queues' order is the order in which jobs were committed. A
//! job runs once it is granted everywhere: first in each queue where it writes,
//! behind nothing but readers where it reads. It holds the grant for its whole
//! run and gives it up when its `Ticket` drops.
//!
//! That is deadlock-free: a waiting job waits only for jobs journaled before it,
//! so the oldest waiting job always gets its turn once the running ones end. And
//! it is the rule Cinder enforces with its `<source>-delete_volume` lock: a delete
//! of a volume or snapshot that a clone or revert is reading is accepted and
//! waits for the reader to finish, instead of zeroing the bytes under it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use crate::model::{Access, Resource};

#[derive(Default)]
pub(super) struct LockTable {
    queues: Mutex<HashMap<Resource, VecDeque<(i64, Access)>>>,
    changed: tokio::sync::Notify,
    /// Ids for work that is not journaled (reconciliation): negative, so they
    /// never meet a job's.
    transient: std::sync::atomic::AtomicI64,
}

/// A job's place in the queues of its resources; dropping it leaves them.
pub(super) struct Ticket {
    table: Arc<LockTable>,
    job: i64,
    locks: Vec<(Resource, Access)>,
}

impl LockTable {
    /// Queues `job` behind every job already queued on its resources.
    pub(super) fn enqueue(self: &Arc<Self>, job: i64, locks: Vec<(Resource, Access)>) -> Ticket {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        for (resource, access) in &locks {
            queues.entry(resource.clone()).or_default().push_back((job, *access));
        }
        Ticket { table: Arc::clone(self), job, locks }
    }

    /// Queues work that has no journal row (it is simply done again at the next
    /// start), behind everything queued so far.
    pub(super) fn enqueue_transient(self: &Arc<Self>, locks: Vec<(Resource, Access)>) -> Ticket {
        let id = -1 - self.transient.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.enqueue(id, locks)
    }

    fn granted(&self, job: i64, locks: &[(Resource, Access)]) -> bool {
        let queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        locks.iter().all(|(resource, access)| {
            let Some(queue) = queues.get(resource) else { return false };
            let ahead = queue.iter().take_while(|(j, _)| *j != job);
            match access {
                Access::Write => ahead.count() == 0,
                Access::Read => ahead.into_iter().all(|(_, a)| *a == Access::Read),
            }
        })
    }

    /// The jobs queued on `resource`, in order (running ones included).
    #[cfg(test)]
    pub(super) fn queued(&self, resource: &Resource) -> Vec<i64> {
        let queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        queues.get(resource).map(|q| q.iter().map(|(j, _)| *j).collect()).unwrap_or_default()
    }
}

impl Ticket {
    /// Waits until the job holds every one of its locks.
    pub(super) async fn granted(&self) {
        loop {
            let notified = self.table.changed.notified();
            tokio::pin!(notified);
            // Registered before the check, so a release in between still wakes us.
            notified.as_mut().enable();
            if self.table.granted(self.job, &self.locks) {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        {
            let mut queues = self.table.queues.lock().unwrap_or_else(|p| p.into_inner());
            for (resource, _) in &self.locks {
                if let Some(queue) = queues.get_mut(resource) {
                    queue.retain(|(j, _)| *j != self.job);
                    if queue.is_empty() {
                        queues.remove(resource);
                    }
                }
            }
        }
        self.table.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn v(id: &str) -> Resource {
        Resource::Volume(id.to_string())
    }

    async fn is_granted(t: &Ticket) -> bool {
        tokio::time::timeout(Duration::from_millis(20), t.granted()).await.is_ok()
    }

    #[tokio::test]
    async fn readers_share_writers_wait_in_journal_order() {
        let table = Arc::new(LockTable::default());
        let clone_a = table.enqueue(1, vec![(v("src"), Access::Read), (v("a"), Access::Write)]);
        let clone_b = table.enqueue(2, vec![(v("src"), Access::Read), (v("b"), Access::Write)]);
        let delete = table.enqueue(3, vec![(v("src"), Access::Write)]);
        let late_reader = table.enqueue(4, vec![(v("src"), Access::Read)]);
        assert!(is_granted(&clone_a).await && is_granted(&clone_b).await, "readers share the source");
        assert!(!is_granted(&delete).await, "the delete waits for the readers");
        assert!(!is_granted(&late_reader).await, "a reader behind a writer waits too (no starvation)");
        drop(clone_a);
        assert!(!is_granted(&delete).await);
        drop(clone_b);
        assert!(is_granted(&delete).await);
        drop(delete);
        assert!(is_granted(&late_reader).await);
        drop(late_reader);
        assert!(table.queued(&v("src")).is_empty(), "queues are dropped when empty");
    }

    #[tokio::test]
    async fn a_ticket_dropped_before_it_ran_leaves_the_queue() {
        let table = Arc::new(LockTable::default());
        let first = table.enqueue(1, vec![(v("x"), Access::Write)]);
        let second = table.enqueue(2, vec![(v("x"), Access::Write)]);
        drop(first); // e.g. the transaction that journaled it did not commit
        assert!(is_granted(&second).await);
        assert_eq!(table.queued(&v("x")), [2]);
    }
}
