use std::process::ExitCode;

use mixmode_register::{parse_args, Command, Registration, Status, USAGE};
use tokio::signal::unix::{signal, SignalKind};

fn main() -> ExitCode {
    let config = match parse_args(std::env::args().skip(1)) {
        Ok(Command::Run(config)) => config,
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("mixmode-register: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
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
    runtime.block_on(run(config))
}

async fn run(config: mixmode_register::Config) -> ExitCode {
    // Install the handlers before registering, so a signal that arrives during the first
    // calls still deregisters instead of killing the process with the key left behind.
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("mixmode-register: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let key = config.key();
    let etcd = config.etcd.to_string();
    let registration = tokio::select! {
        r = Registration::start(config) => match r {
            Ok(r) => r,
            Err(e) => {
                eprintln!("mixmode-register: cannot register {key} at {etcd}: {e}");
                return ExitCode::FAILURE;
            }
        },
        _ = term.recv() => return ExitCode::SUCCESS,
        _ = int.recv() => return ExitCode::SUCCESS,
    };
    let mut seen = registration.status();
    eprintln!(
        "mixmode-register: registered {key} at {etcd}, lease {:x}",
        seen.lease
    );
    let mut changes = registration.watch();
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            changed = changes.changed() => {
                if changed.is_err() {
                    // The keep-alive task ended on its own; nothing keeps the key alive.
                    eprintln!("mixmode-register: keep-alive stopped unexpectedly");
                    return ExitCode::FAILURE;
                }
                let now = changes.borrow_and_update().clone();
                log_change(&seen, &now, &key);
                seen = now;
            }
        }
    }
    match registration.stop().await {
        Ok(()) => {
            eprintln!("mixmode-register: deregistered {key}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mixmode-register: could not revoke the lease ({e}); {key} stays until the lease expires");
            ExitCode::FAILURE
        }
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
