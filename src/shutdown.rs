//! One shutdown signal threaded through every task and thread (as in
//! mini-redis): the blocking source loop checks a flag when it wakes (and
//! is woken by a hook, see [`Shutdown::on_trigger`]), async tasks await a
//! watch channel.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

#[derive(Clone)]
pub struct Shutdown {
    flag: Arc<AtomicBool>,
    tx: Arc<watch::Sender<bool>>,
    rx: watch::Receiver<bool>,
    hooks: Arc<Mutex<Vec<Hook>>>,
}

type Hook = Box<dyn Fn() + Send + Sync>;

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Shutdown {
        let (tx, rx) = watch::channel(false);
        Shutdown {
            flag: Arc::new(AtomicBool::new(false)),
            tx: Arc::new(tx),
            rx,
            hooks: Arc::new(Mutex::new(Vec::new())),
        }
    }

    pub fn trigger(&self) {
        self.flag.store(true, Ordering::SeqCst);
        let _ = self.tx.send(true);
        for h in self.hooks.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            h();
        }
    }

    /// Also run `f` on trigger: wakes a thread blocked until its next
    /// deadline (the source loop sleeps without a short tick).
    pub fn on_trigger(&self, f: impl Fn() + Send + Sync + 'static) {
        self.hooks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Box::new(f));
        if self.is_triggered() {
            // Triggered before the hook was in place.
            if let Some(h) = self.hooks.lock().unwrap_or_else(|e| e.into_inner()).last() {
                h();
            }
        }
    }

    pub fn is_triggered(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Resolves once shutdown is triggered.
    pub async fn wait(&mut self) {
        let _ = self.rx.wait_for(|v| *v).await;
    }
}
