//! The hand-off between the kubelet and the service proxy when a pod's
//! network is up: the kubelet asks the proxy to attach to the new pod
//! interface and waits for the answer, so the pod's first packet is
//! already translated. A type of its own here so that neither part
//! imports the other.

use std::{sync::Arc, time::Duration};

use tokio::sync::{mpsc, oneshot};

/// Asks the proxy to look for new pod interfaces now and waits until it
/// has attached to them (the kubelet calls it after CNI ADD, before the
/// pod's containers start, so their first packet is already translated).
#[derive(Debug, Clone)]
pub struct Rescan(mpsc::UnboundedSender<oneshot::Sender<()>>);

impl Rescan {
    /// A handle and the receiver to give [`run`].
    pub fn channel() -> (Self, RescanRx) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self(tx), RescanRx(Arc::new(tokio::sync::Mutex::new(rx))))
    }

    /// Returns once the proxy has rescanned (or after 5 s, or at once if the
    /// proxy is not running).
    pub async fn now(&self) {
        let (tx, rx) = oneshot::channel();
        if self.0.send(tx).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), rx).await;
        }
    }
}

/// The receiving side of [`Rescan`]; a clone goes to each run of the
/// proxy (one at a time), so a restarted proxy keeps the kubelet's handle.
#[derive(Debug, Clone)]
pub struct RescanRx(Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<oneshot::Sender<()>>>>);

impl RescanRx {
    /// The next request: answer it once the interfaces are attached.
    pub async fn recv(&self) -> Option<oneshot::Sender<()>> {
        self.0.lock().await.recv().await
    }
}
