//! One child process that logs to a file, dies with us, and is killed when dropped.

use std::fmt;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::ProcessError;

/// How a child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitInfo {
    /// Exit code, if it exited by itself.
    pub code: Option<i32>,
    /// Signal number, if a signal ended it.
    pub signal: Option<i32>,
    /// Whether we asked it to end (kill or stop); otherwise it crashed or quit on its own.
    pub requested: bool,
}

impl fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "exited with code {code}")?,
            (None, Some(sig)) => match Signal::try_from(sig) {
                Ok(s) => write!(f, "killed by {}", s.as_str())?,
                Err(_) => write!(f, "killed by signal {sig}")?,
            },
            (None, None) => f.write_str("exited")?,
        }
        if !self.requested {
            f.write_str(", unrequested")?;
        }
        Ok(())
    }
}

/// What a child is doing now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessStatus {
    /// Never started (only seen while a cluster boots).
    NotStarted,
    /// Running.
    Running,
    /// Stopped by SIGSTOP; resumes on SIGCONT.
    Paused,
    /// Gone.
    Exited(ExitInfo),
}

impl ProcessStatus {
    /// Running or paused: the process exists.
    pub fn is_alive(&self) -> bool {
        matches!(self, ProcessStatus::Running | ProcessStatus::Paused)
    }
}

impl fmt::Display for ProcessStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProcessStatus::NotStarted => f.write_str("not started"),
            ProcessStatus::Running => f.write_str("running"),
            ProcessStatus::Paused => f.write_str("paused"),
            ProcessStatus::Exited(exit) => exit.fmt(f),
        }
    }
}

/// A child process started by [`ManagedProcess::spawn`].
///
/// It gets SIGKILL when this process dies, even by SIGKILL (Linux parent-death signal), runs in
/// its own process group (a terminal's Ctrl-C reaches only us, and we stop children in order),
/// and is killed and reaped on drop.
#[derive(Debug)]
pub struct ManagedProcess {
    name: String,
    child: Child,
    paused: bool,
    requested: bool,
    exit: Option<ExitInfo>,
}

impl ManagedProcess {
    /// Starts `cmd` with stdin closed and stdout and stderr appended to `log` (created if
    /// missing), after a header line naming the command. `name` labels errors.
    pub fn spawn(
        name: impl Into<String>,
        mut cmd: Command,
        log: &Path,
    ) -> Result<ManagedProcess, ProcessError> {
        let name = name.into();
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| ProcessError::io(format!("opening log {}", log.display()), e))?;
        let header = format!("=== {} starting {}\n", unix_time(), describe(&cmd));
        file.write_all(header.as_bytes())
            .map_err(|e| ProcessError::io(format!("writing log {}", log.display()), e))?;
        let err_file = file
            .try_clone()
            .map_err(|e| ProcessError::io(format!("opening log {}", log.display()), e))?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(err_file))
            .process_group(0);
        let parent = nix::unistd::getpid();
        // SAFETY: the closure runs in the forked child before exec, where only
        // async-signal-safe calls are allowed: it makes two system calls (prctl, getppid),
        // does not allocate (`from_raw_os_error` stores the code inline) and takes no lock.
        unsafe {
            cmd.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
                    .map_err(|e| std::io::Error::from_raw_os_error(e as i32))?;
                // The parent may have died between fork and prctl: then no signal will come.
                if nix::unistd::getppid() != parent {
                    return Err(std::io::Error::from_raw_os_error(
                        nix::errno::Errno::ESRCH as i32,
                    ));
                }
                Ok(())
            });
        }
        let what = format!("starting {name} ({})", describe(&cmd));
        let child = spawn_on_spawner_thread(cmd).map_err(|e| ProcessError::io(what, e))?;
        Ok(ManagedProcess {
            name,
            child,
            paused: false,
            requested: false,
            exit: None,
        })
    }

    /// The label given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id (stays valid until the child is reaped by this handle).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the child is doing now (reaps it if it has exited).
    pub fn status(&mut self) -> ProcessStatus {
        if let Some(exit) = self.poll_exit() {
            return ProcessStatus::Exited(exit);
        }
        if self.paused {
            ProcessStatus::Paused
        } else {
            ProcessStatus::Running
        }
    }

    /// SIGKILL, then reap. A no-op if it has already exited.
    pub fn kill(&mut self) -> Result<ExitInfo, ProcessError> {
        if let Some(exit) = self.poll_exit() {
            return Ok(exit);
        }
        self.requested = true;
        self.signal(Signal::SIGKILL)?;
        let status = self
            .child
            .wait()
            .map_err(|e| ProcessError::io(format!("waiting for {}", self.name), e))?;
        Ok(self.record(status))
    }

    /// SIGKILL without waiting for the exit (reap it with [`ManagedProcess::kill`] or
    /// [`ManagedProcess::status`]), so that several children can die at the same moment.
    /// A no-op if it has already exited.
    pub fn start_kill(&mut self) -> Result<(), ProcessError> {
        if self.poll_exit().is_some() {
            return Ok(());
        }
        self.requested = true;
        self.signal(Signal::SIGKILL)
    }

    /// SIGSTOP: the process freezes, its sockets stay open (a silent peer, not a dead one).
    pub fn pause(&mut self) -> Result<(), ProcessError> {
        self.ensure_alive()?;
        self.signal(Signal::SIGSTOP)?;
        self.paused = true;
        Ok(())
    }

    /// SIGCONT after [`ManagedProcess::pause`].
    pub fn resume(&mut self) -> Result<(), ProcessError> {
        self.ensure_alive()?;
        self.signal(Signal::SIGCONT)?;
        self.paused = false;
        Ok(())
    }

    /// SIGTERM (and SIGCONT if paused, or the signal would wait): asks for a graceful exit.
    /// A no-op if it has already exited.
    pub fn terminate(&mut self) -> Result<(), ProcessError> {
        if self.poll_exit().is_some() {
            return Ok(());
        }
        self.requested = true;
        self.signal(Signal::SIGTERM)?;
        if self.paused {
            self.signal(Signal::SIGCONT)?;
            self.paused = false;
        }
        Ok(())
    }

    /// Waits until the child exits or `deadline` passes; `None` if it is still there.
    pub async fn wait_until(&mut self, deadline: Instant) -> Option<ExitInfo> {
        loop {
            if let Some(exit) = self.poll_exit() {
                return Some(exit);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            tokio::time::sleep((deadline - now).min(Duration::from_millis(20))).await;
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited after `grace`.
    pub async fn stop(&mut self, grace: Duration) -> Result<ExitInfo, ProcessError> {
        self.terminate()?;
        match self.wait_until(Instant::now() + grace).await {
            Some(exit) => Ok(exit),
            None => self.kill(),
        }
    }

    fn ensure_alive(&mut self) -> Result<(), ProcessError> {
        match self.poll_exit() {
            Some(exit) => Err(ProcessError::NotRunning {
                name: self.name.clone(),
                status: ProcessStatus::Exited(exit),
            }),
            None => Ok(()),
        }
    }

    /// Signals only a child that has not been reaped, so its pid cannot have been reused.
    fn signal(&self, signal: Signal) -> Result<(), ProcessError> {
        let pid = self.pid();
        let raw = i32::try_from(pid).map_err(|_| ProcessError::Signal {
            pid,
            signal: signal.as_str(),
            source: nix::errno::Errno::ESRCH,
        })?;
        kill(Pid::from_raw(raw), signal).map_err(|source| ProcessError::Signal {
            pid,
            signal: signal.as_str(),
            source,
        })
    }

    fn poll_exit(&mut self) -> Option<ExitInfo> {
        if self.exit.is_none()
            && let Ok(Some(status)) = self.child.try_wait()
        {
            self.record(status);
        }
        self.exit
    }

    fn record(&mut self, status: ExitStatus) -> ExitInfo {
        let exit = ExitInfo {
            code: status.code(),
            signal: status.signal(),
            requested: self.requested,
        };
        self.exit = Some(exit);
        self.paused = false;
        exit
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        // Also reached while a test unwinds: never leave a node running behind it.
        let _ = self.kill();
    }
}

/// The command line, for logs and errors.
fn describe(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

fn unix_time() -> String {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!("[unix {}.{:03}]", since.as_secs(), since.subsec_millis())
}

type SpawnJob = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawns on one thread that lives as long as the process. The parent-death signal fires when
/// the *thread* that forked the child ends, not the process; tokio's blocking-pool threads end
/// after a few idle seconds, which would kill healthy children.
fn spawn_on_spawner_thread(cmd: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnJob>> = OnceLock::new();
    let sender = match SPAWNER.get() {
        Some(sender) => sender,
        None => {
            let (tx, rx) = mpsc::channel::<SpawnJob>();
            let started = std::thread::Builder::new()
                .name("dynamo-spawner".into())
                .spawn(move || {
                    for (mut cmd, reply) in rx {
                        let _ = reply.send(cmd.spawn());
                    }
                });
            match started {
                // A racing caller may have installed its own spawner: then ours exits when
                // its sender (dropped here) goes away.
                Ok(_) => SPAWNER.get_or_init(|| tx),
                Err(e) => return Err(e),
            }
        }
    };
    let (reply_tx, reply_rx) = mpsc::channel();
    sender
        .send((cmd, reply_tx))
        .map_err(|_| std::io::Error::other("the spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| std::io::Error::other("the spawner thread is gone"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh log path, removed again when the returned guard drops.
    struct TempLog(std::path::PathBuf);

    impl std::ops::Deref for TempLog {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl AsRef<Path> for TempLog {
        fn as_ref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempLog {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn log_path(tag: &str) -> TempLog {
        let path = std::env::temp_dir().join(format!(
            "dynamo-child-test-{}-{tag}.log",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        TempLog(path)
    }

    fn sleeper(tag: &str) -> ManagedProcess {
        let mut cmd = Command::new("sleep");
        cmd.arg("600");
        ManagedProcess::spawn(tag, cmd, &log_path(tag)).unwrap()
    }

    fn exists(pid: u32) -> bool {
        kill(Pid::from_raw(pid as i32), None).is_ok()
    }

    /// The state letter of /proc/PID/stat: R, S, T (stopped), Z...
    fn proc_state(pid: u32) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let after = stat.rsplit_once(')')?.1;
        after.trim_start().chars().next()
    }

    async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn kill_ends_and_reaps_the_child() {
        let mut p = sleeper("kill");
        let pid = p.pid();
        assert_eq!(p.status(), ProcessStatus::Running);
        assert!(exists(pid));
        let exit = p.kill().unwrap();
        assert_eq!(exit.signal, Some(Signal::SIGKILL as i32));
        assert!(exit.requested);
        assert!(!exists(pid), "reaped, so not even a zombie is left");
        assert_eq!(p.status(), ProcessStatus::Exited(exit));
        assert_eq!(p.kill().unwrap(), exit, "killing twice is a no-op");
        assert!(matches!(p.pause(), Err(ProcessError::NotRunning { .. })));
    }

    #[tokio::test]
    async fn pause_and_resume_stop_and_continue_the_process() {
        let mut p = sleeper("pause");
        let pid = p.pid();
        p.pause().unwrap();
        assert_eq!(p.status(), ProcessStatus::Paused);
        eventually("state T", || proc_state(pid) == Some('T')).await;
        p.resume().unwrap();
        assert_eq!(p.status(), ProcessStatus::Running);
        eventually("state S", || proc_state(pid) != Some('T')).await;
    }

    #[tokio::test]
    async fn stop_terminates_gracefully_even_when_paused() {
        let mut p = sleeper("stop");
        p.pause().unwrap();
        let started = Instant::now();
        let exit = p.stop(Duration::from_secs(10)).await.unwrap();
        assert_eq!(exit.signal, Some(Signal::SIGTERM as i32), "{exit}");
        assert!(exit.requested);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "SIGCONT let SIGTERM through"
        );
    }

    #[tokio::test]
    async fn stop_escalates_to_sigkill_after_the_grace_period() {
        let mut cmd = Command::new("sh");
        // Ignores SIGTERM; `exec` would lose the trap, so sh stays as the parent of sleep.
        cmd.args([
            "-c",
            "trap '' TERM; echo trap-set; while true; do sleep 0.05; done",
        ]);
        let log = log_path("stubborn");
        let mut p = ManagedProcess::spawn("stubborn", cmd, &log).unwrap();
        eventually("the trap", || {
            // The header line quotes the script: look for the output line itself.
            std::fs::read_to_string(&log)
                .unwrap()
                .contains("\ntrap-set\n")
        })
        .await;
        let exit = p.stop(Duration::from_millis(200)).await.unwrap();
        assert_eq!(exit.signal, Some(Signal::SIGKILL as i32), "{exit}");
    }

    #[tokio::test]
    async fn a_crash_is_reported_as_unrequested_with_its_code_and_output_is_logged() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo to-stdout; echo to-stderr >&2; exit 7"]);
        let log = log_path("crash");
        let mut p = ManagedProcess::spawn("crash", cmd, &log).unwrap();
        eventually("exit", || !p.status().is_alive()).await;
        let ProcessStatus::Exited(exit) = p.status() else {
            panic!("still alive")
        };
        assert_eq!((exit.code, exit.requested), (Some(7), false));
        assert_eq!(exit.to_string(), "exited with code 7, unrequested");
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.starts_with("=== [unix "), "{text}");
        assert!(text.contains("sh -c"), "{text}");
        assert!(
            text.contains("to-stdout\n") && text.contains("to-stderr\n"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn drop_kills_the_child() {
        let p = sleeper("drop");
        let pid = p.pid();
        assert!(exists(pid));
        drop(p);
        assert!(!exists(pid), "pid {pid} survived the drop");
    }

    #[tokio::test]
    async fn drop_kills_the_child_while_a_test_unwinds() {
        let pid = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let seen = pid.clone();
        let result = std::thread::spawn(move || {
            let p = sleeper("unwind");
            seen.store(p.pid(), std::sync::atomic::Ordering::SeqCst);
            panic!("a failing test");
        })
        .join();
        assert!(result.is_err());
        let pid = pid.load(std::sync::atomic::Ordering::SeqCst);
        assert_ne!(pid, 0);
        assert!(!exists(pid), "pid {pid} survived the panic");
    }

    #[test]
    fn a_missing_program_is_a_clear_error() {
        let cmd = Command::new("/nonexistent/dynamo-node");
        let err = ManagedProcess::spawn("n9", cmd, &log_path("missing")).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("starting n9") && msg.contains("/nonexistent/dynamo-node"),
            "{msg}"
        );
    }

    /// Set in the environment of a re-run of this test binary that plays the parent.
    const HELPER_ENV: &str = "DYNAMO_PDEATHSIG_HELPER_PIDFILE";

    /// A no-op in a normal run; as the re-run, starts a sleeper, reports its pid, and waits.
    #[test]
    fn pdeathsig_helper() {
        let Some(pidfile) = std::env::var_os(HELPER_ENV) else {
            return;
        };
        let p = sleeper("orphan");
        std::fs::write(pidfile, p.pid().to_string()).unwrap();
        std::thread::sleep(Duration::from_secs(600));
    }

    #[tokio::test]
    async fn children_die_when_their_parent_is_sigkilled() {
        let pidfile = log_path("orphan-pid");
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "process::child::tests::pdeathsig_helper",
            "--exact",
            "--nocapture",
        ])
        .env(HELPER_ENV, &pidfile.0);
        let mut parent = ManagedProcess::spawn("helper", cmd, &log_path("helper")).unwrap();
        eventually("the helper's pid file", || {
            std::fs::read_to_string(&pidfile).is_ok_and(|s| !s.is_empty())
        })
        .await;
        let orphan: u32 = std::fs::read_to_string(&pidfile).unwrap().parse().unwrap();
        assert!(exists(orphan));
        parent.kill().unwrap();
        // Reparented to init, a killed orphan may linger briefly as a zombie.
        eventually("the orphan's death", || {
            matches!(proc_state(orphan), None | Some('Z'))
        })
        .await;
    }
}
