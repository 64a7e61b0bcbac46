//! Handing the control path to a successor process (a binary upgrade, see
//! [`crate::control::upgrade`]) and taking it back when the successor fails.

use super::*;

impl Control {
    /// Gives the control path to a successor process (a binary upgrade):
    /// every rollout controller stops after saving its progress to the
    /// moment, no write is in progress, and the state store is closed so the
    /// successor can open it and resume the rollouts where they are. The data
    /// path goes on serving until the process drains.
    pub async fn hand_over(&self) {
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let handles: Vec<_> = self.rollouts.lock().await.values().cloned().collect();
        for h in handles {
            // Waits for a tick in progress; the next one sees `handed_over`.
            let mut r = h.lock().await;
            // Only the rollouts this process runs (in a fleet: if it leads).
            if !r.is_done() && r.driven {
                if let Err(e) = self.save_progress(&mut r) {
                    tracing::error!(service = %r.service, error = %e, "cannot save rollout progress for the successor");
                }
            }
        }
        let _w = self.writes.lock().await;
        if let Some(store) = &self.store {
            store.release();
        }
        self.handed_over.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether the control path is with a successor process.
    pub fn handed_over(&self) -> bool {
        self.handed_over.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Takes the control path back after a successor failed: the state
    /// store reopened, the stored rollouts resumed.
    pub async fn take_back(self: &Arc<Self>) -> Result<(), crate::Error> {
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if let Some(store) = &self.store {
            store.reopen()?;
        }
        self.handed_over.store(false, std::sync::atomic::Ordering::SeqCst);
        self.resume_rollouts().await
    }

    /// Which hand-over epoch this is (see [`Control::hand_over`]).
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::SeqCst)
    }
}
