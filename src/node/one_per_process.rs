//! One node per OS process: ractor's registry and process groups are global to a process, so
//! a second node would find the first one's actors under its own roles and answer for it.

use std::sync::Mutex;

/// The name of the node running in this process, if one does.
static RUNNING: Mutex<Option<String>> = Mutex::new(None);

/// This process's one place for a node, held from the start of `Node::start` until its stop
/// (or until the start fails).
pub struct NodeSlot {
    released: bool,
}

impl NodeSlot {
    /// Takes the place for node `name`; the error names the node that holds it.
    pub fn claim(name: &str) -> Result<NodeSlot, String> {
        let mut running = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
        match running.as_ref() {
            Some(holder) => Err(holder.clone()),
            None => {
                *running = Some(name.to_owned());
                Ok(NodeSlot { released: false })
            }
        }
    }

    /// Gives the place back once the node's actors are gone.
    pub fn release(mut self) {
        self.release_now();
    }

    fn release_now(&mut self) {
        if !self.released {
            self.released = true;
            *RUNNING.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
    }
}

impl Drop for NodeSlot {
    /// A start that failed gives the place back. A `Node` dropped without `stop` keeps its
    /// actors running, so it keeps its slot: the `Node` forgets the slot rather than drop it.
    fn drop(&mut self) {
        self.release_now();
    }
}
