//! Starting, stopping, pausing and restarting node processes on this machine.
