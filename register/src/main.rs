use std::io;
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, ExitStatus};
use std::time::Duration;

use clap::{CommandFactory as _, Parser as _};
use mixmode_register::{
    wait_until_quiet, Args, Config, Decision, DrainConfig, Registration, Status,
};
use tokio::net::TcpStream;
use tokio::process::Child;
use tokio::signal::unix::{signal, Signal, SignalKind};

fn main() -> ExitCode {
    // Bad flags exit 2 with clap's message and the usage; --help and --version exit 0.
    let args = Args::parse();
    let usage = Args::command().render_usage();
    if args.command.is_empty() && std::env::args().next_back().as_deref() == Some("--") {
        eprintln!("mixmode-register: -- must be followed by a command\n\n{usage}");
        return ExitCode::from(2);
    }
    let (config, drain) = match args.config().and_then(|c| Ok((c, args.drain()?))) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mixmode-register: {e}\n\n{usage}");
            return ExitCode::from(2);
        }
    };
    let ready_file = args.ready_file;
    let command = args.command;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mixmode-register: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(config, drain, ready_file, command))
}

/// Why the registration ends.
enum End {
    Signal(libc::c_int),
    CommandExited(io::Result<ExitStatus>),
}

struct Signals {
    term: Signal,
    int: Signal,
    /// A wrapped server asking to be drained and stopped (`kill -USR1 $PPID`).
    usr1: Signal,
}

impl Signals {
    async fn next(&mut self) -> libc::c_int {
        tokio::select! {
            _ = self.term.recv() => libc::SIGTERM,
            _ = self.int.recv() => libc::SIGINT,
            _ = self.usr1.recv() => libc::SIGUSR1,
        }
    }
}

/// The signal the wrapped command gets at the end: the one we got, but a drain request
/// (SIGUSR1) means "stop" to us and may mean anything to the command.
fn passed_on(sig: libc::c_int) -> libc::c_int {
    if sig == libc::SIGUSR1 {
        libc::SIGTERM
    } else {
        sig
    }
}

async fn run(
    config: Config,
    drain: Option<DrainConfig>,
    ready_file: Option<PathBuf>,
    command: Vec<String>,
) -> ExitCode {
    // Installed before anything else, so a signal during start-up still deregisters instead
    // of killing the process with the key left behind.
    let mut signals = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::user_defined1()),
    ) {
        (Ok(term), Ok(int), Ok(usr1)) => Signals { term, int, usr1 },
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            eprintln!("mixmode-register: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut child = match command.split_first() {
        None => None,
        Some((program, args)) => match tokio::process::Command::new(program).args(args).spawn() {
            Ok(child) => Some(child),
            Err(e) => {
                eprintln!("mixmode-register: cannot run {program:?}: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let key = config.key();
    let etcd = config.etcd.to_string();

    // A wrapped server is registered only once it can take requests.
    if child.is_some() {
        tokio::select! {
            () = accepts_connections(config.address) => {}
            sig = signals.next() => return finish_command(&mut child, Some(passed_on(sig))).await,
            status = wait(&mut child) => {
                eprintln!("mixmode-register: command exited before {} accepted connections", config.address);
                return exit_code(status);
            }
        }
    }

    // A signal while the key is being put does not cancel the start: etcd may already hold the
    // key, and only the finished start knows its lease. The start is bounded by the request
    // timeout; then the lease is revoked at once instead of the key staying for a TTL.
    let mut early: Option<libc::c_int> = None;
    let start = Registration::start(config);
    tokio::pin!(start);
    let registration = loop {
        tokio::select! {
            r = &mut start => match r {
                Ok(r) => break r,
                Err(e) => {
                    eprintln!("mixmode-register: cannot register {key} at {etcd}: {e}");
                    // Fail fast, also for a wrapped server: a supervisor restarting us is clearer
                    // than a server that runs but is silently missing from the registry.
                    if child.is_some() {
                        eprintln!("mixmode-register: stopping the command");
                        let sig = early.map_or(libc::SIGTERM, passed_on);
                        let _ = finish_command(&mut child, Some(sig)).await;
                    }
                    return ExitCode::FAILURE;
                }
            },
            sig = signals.next(), if early.is_none() => early = Some(sig),
            status = wait(&mut child), if early.is_none() => return exit_code(status),
        }
    };
    let mut seen = registration.status();
    eprintln!(
        "mixmode-register: registered {key} at {etcd}, lease {:x}",
        seen.lease
    );
    if let Some(path) = &ready_file {
        if let Err(e) = std::fs::write(path, b"ready\n") {
            eprintln!(
                "mixmode-register: cannot create the ready file {}: {e}",
                path.display()
            );
            let _ = registration.stop().await;
            let _ = finish_command(&mut child, Some(libc::SIGTERM)).await;
            return ExitCode::FAILURE;
        }
    }
    let mut changes = registration.watch();
    let mut end = if let Some(sig) = early {
        End::Signal(sig)
    } else {
        loop {
            tokio::select! {
                sig = signals.next() => break End::Signal(sig),
                status = wait(&mut child) => break End::CommandExited(status),
                changed = changes.changed() => {
                    if changed.is_err() {
                        // Cannot happen while `registration` lives; never spin on it.
                        eprintln!("mixmode-register: keep-alive stopped unexpectedly");
                        break End::Signal(libc::SIGTERM);
                    }
                    let now = changes.borrow_and_update().clone();
                    log_change(&seen, &now, &key);
                    seen = now;
                }
            }
        }
    };
    let mut gave_up = false;
    leave_load_balancer(ready_file.as_deref());
    if let End::Signal(sig) = end {
        end = End::Signal(passed_on(sig));
        // A server stopped during its start was never in a load balancer: nothing to drain.
        if let (Some(d), None) = (&drain, early) {
            match drain_while_needed(d, &key, &mut signals, &mut child).await {
                Drained::Decided(Decision::MaxWait { .. }) => gave_up = true,
                Drained::Decided(_) => {}
                Drained::CommandExited(status) => end = End::CommandExited(status),
            }
        }
    }
    let revoked = match registration.stop().await {
        Ok(()) => {
            eprintln!("mixmode-register: deregistered {key}");
            true
        }
        Err(e) => {
            eprintln!("mixmode-register: could not revoke the lease ({e}); {key} stays until the lease expires");
            false
        }
    };
    let code = match end {
        End::CommandExited(status) => exit_code(status),
        End::Signal(sig) if child.is_some() => finish_command(&mut child, Some(sig)).await,
        End::Signal(_) if revoked => ExitCode::SUCCESS,
        End::Signal(_) => ExitCode::FAILURE,
    };
    if gave_up {
        // Whatever the command answered: the drain did not end quiet, and a supervisor (or
        // the rollout's log) should see that.
        return ExitCode::from(EXIT_MAX_WAIT);
    }
    code
}

/// Exit code of a drain that ended at `--max-wait-s`.
const EXIT_MAX_WAIT: u8 = 3;

/// A readiness probe or health check reading the file now fails: the load balancer stops
/// sending new requests (how soon depends on its probe period).
fn leave_load_balancer(ready_file: Option<&Path>) {
    if let Some(path) = ready_file {
        match std::fs::remove_file(path) {
            Ok(()) => eprintln!(
                "mixmode-register: removed {}: leaving the load balancer",
                path.display()
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => eprintln!(
                "mixmode-register: cannot remove the ready file {}: {e}",
                path.display()
            ),
        }
    }
}

enum Drained {
    Decided(Decision),
    CommandExited(io::Result<ExitStatus>),
}

/// Keeps the registration (its keep-alive runs on) while the Envoys need the version. More
/// signals do not cut the wait short (a supervisor's repeated SIGTERM would otherwise undo the
/// drain); SIGKILL does. A wrapped command that exits ends the wait: there is no server left
/// to rescue to.
async fn drain_while_needed(
    d: &DrainConfig,
    key: &str,
    signals: &mut Signals,
    child: &mut Option<Child>,
) -> Drained {
    let urls: Vec<String> = d.sources.iter().map(|s| s.url()).collect();
    eprintln!(
        "mixmode-register: draining: {key} stays registered until version {} has not been needed for {} ms on {} (at most {} s)",
        d.target.version,
        d.policy.quiet_ms,
        urls.join(", "),
        d.policy.max_wait_ms / 1000,
    );
    let quiet = wait_until_quiet(d.target.clone(), d.policy, &d.sources, |line| {
        eprintln!("mixmode-register: {line}")
    });
    tokio::pin!(quiet);
    loop {
        tokio::select! {
            decision = &mut quiet => {
                match &decision {
                    Decision::MaxWait { .. } => eprintln!(
                        "mixmode-register: gave up draining: version {} {decision} (--max-wait-s {}); deregistering anyway",
                        d.target.version,
                        d.policy.max_wait_ms / 1000
                    ),
                    _ => eprintln!("mixmode-register: drained: version {} {decision}", d.target.version),
                }
                return Drained::Decided(decision);
            }
            sig = signals.next() => eprintln!(
                "mixmode-register: signal {sig} while draining: still waiting (SIGKILL stops at once)"
            ),
            status = wait(child) => {
                eprintln!("mixmode-register: the command exited while draining; deregistering now");
                return Drained::CommandExited(status);
            }
        }
    }
}

/// Waits for the wrapped command; never resolves without one.
async fn wait(child: &mut Option<Child>) -> io::Result<ExitStatus> {
    match child {
        Some(c) => c.wait().await,
        None => std::future::pending().await,
    }
}

/// Passes `sig` on to the wrapped command, waits for it and exits with its code.
async fn finish_command(child: &mut Option<Child>, sig: Option<libc::c_int>) -> ExitCode {
    let Some(c) = child else {
        return ExitCode::SUCCESS;
    };
    if let (Some(sig), Some(pid)) = (sig, c.id()) {
        if let Ok(pid) = libc::pid_t::try_from(pid) {
            // SAFETY: kill(2) takes plain integers; the PID is our own un-reaped child, so it
            // cannot have been reused by another process.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }
    exit_code(c.wait().await)
}

fn exit_code(status: io::Result<ExitStatus>) -> ExitCode {
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
            (None, Some(sig)) => ExitCode::from(u8::try_from(128 + sig).unwrap_or(1)),
            (None, None) => ExitCode::FAILURE,
        },
        Err(e) => {
            eprintln!("mixmode-register: lost track of the command: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves once `address` accepts a TCP connection (checked every 100 ms).
async fn accepts_connections(address: SocketAddr) {
    loop {
        let attempt = tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(address));
        if let Ok(Ok(_)) = attempt.await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One line per outage and per recovery, not one per failed keep-alive.
fn log_change(before: &Status, now: &Status, key: &str) {
    if before.etcd_reachable && !now.etcd_reachable {
        let why = now.last_error.as_deref().unwrap_or("unknown error");
        eprintln!("mixmode-register: keep-alive failing ({why}); retrying every ttl/3");
    }
    if now.registrations > before.registrations {
        eprintln!(
            "mixmode-register: lease {:x} was lost; registered {key} again with lease {:x}",
            before.lease, now.lease
        );
    }
    if !before.etcd_reachable && now.etcd_reachable {
        eprintln!(
            "mixmode-register: etcd answers again; lease {:x}",
            now.lease
        );
    }
}
