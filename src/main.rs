//! One multi-call binary, busybox style: installed as `provisionerd` (the daemon) and
//! `provisionerctl` (the operator's client), or called as `provisioner <applet> ...`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use provisioner::config::Config;
use provisioner::config::value;
use provisioner::control::{self, Reply, Request, human, protocol};
use provisioner::core::MacAddr;
use provisioner::core::Snapshot;
use provisioner::core::time::Instant;
use provisioner::daemon;
use provisioner::firewall::{Firewall, Ruleset};

/// The provisioning network's daemon: stations, DHCP, DNS and the nftables table.
#[derive(Parser)]
#[command(name = "provisionerd", version)]
struct DaemonArgs {
    /// Config file: UCI (/etc/config/provisioner) or TOML (a name ending in .toml).
    #[arg(short, long, default_value = "/etc/config/provisioner")]
    config: PathBuf,
    /// Validate CONFIG and exit: prints the first error as file:line: option: message.
    #[arg(long, value_name = "CONFIG", conflicts_with_all = ["flush", "print_ruleset", "print_config"])]
    check: Option<PathBuf>,
    /// Remove our tables (inet and arp provisioner; the daemon leaves them in place when it
    /// stops) and exit.
    #[arg(long, conflicts_with_all = ["print_ruleset", "print_config"])]
    flush: bool,
    /// Print the nft script the config produces and exit.
    #[arg(long, conflicts_with = "print_config")]
    print_ruleset: bool,
    /// Print the config's resolved values the OpenWrt scripts use (interface, subnet,
    /// router, max_clients, the radio's ifname and maxassoc...) as shell assignments, and
    /// exit.
    #[arg(long)]
    print_config: bool,
    /// Log level: error, warn, info, debug, trace.
    #[arg(long, default_value = "info")]
    log_level: tracing::Level,
    /// The control socket provisionerctl talks to.
    #[arg(long, value_name = "PATH", default_value = control::DEFAULT_SOCKET)]
    control: PathBuf,
    /// Runtime files (a managed hostapd's config, control sockets).
    #[arg(long, value_name = "DIR", default_value = "/var/run/provisioner")]
    run_dir: PathBuf,
}

/// Operate the provisioning network.
///
/// Exit status: 0 done, 1 the daemon refused (the reason on stderr), 2 bad usage, 3 no
/// daemon to ask (or one whose reply this build cannot read).
#[derive(Parser)]
#[command(name = "provisionerctl", version)]
struct CtlArgs {
    /// The daemon's control socket.
    #[arg(short, long, value_name = "PATH", default_value = control::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Print the reply as JSON (the control protocol's line), for scripts.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Subcommand)]
enum CtlCommand {
    /// The window, the clients (address, age, session left) and the bans.
    Status,
    /// Open or close the activation window.
    Window {
        #[command(subcommand)]
        action: WindowAction,
    },
    /// Disconnect a client now (it may come back, with a new session, unless banned).
    Evict {
        #[arg(value_parser = parse_mac)]
        mac: MacAddr,
        /// Also keep it off this long (90s, 15m, 2h, 1d; up to 30 days).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        ban: Option<Duration>,
    },
    /// Keep a MAC off (a client is disconnected): for DURATION, or the configured cooldown.
    Ban {
        #[arg(value_parser = parse_mac)]
        mac: MacAddr,
        /// 90s, 15m, 2h, 1d (a bare number is seconds); up to 30 days.
        #[arg(value_parser = parse_duration)]
        duration: Option<Duration>,
    },
    /// Lift a MAC's ban.
    Unban {
        #[arg(value_parser = parse_mac)]
        mac: MacAddr,
    },
    /// Read the config again (as SIGHUP): applied, or the error and nothing changed.
    Reload,
    /// The MAC/IP bindings the kernel holds (read from the kernel, works without the daemon).
    Leases,
    /// Every station: admitted (since when, session left), waiting, banned, turned away;
    /// bytes and packets up and down as the kernel counted them.
    Clients,
}

#[derive(Subcommand)]
enum WindowAction {
    /// Open it, for the configured duration or DURATION: 5 to 60 minutes (15 is minutes;
    /// 15m, 1h, 900s also do).
    Open {
        #[arg(value_parser = parse_window)]
        duration: Option<Duration>,
    },
    /// Close it: the SSID goes down, clients are disconnected.
    Close,
}

fn parse_mac(s: &str) -> Result<MacAddr, String> {
    s.parse()
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    value::duration(s)
}

/// A bare number is minutes, as the window is counted in them.
fn parse_window(s: &str) -> Result<Duration, String> {
    match s.parse::<u64>() {
        Ok(m) => Ok(Duration::from_secs(m.saturating_mul(60))),
        Err(_) => value::duration(s),
    }
}

fn main() -> ExitCode {
    let mut args: Vec<OsString> = std::env::args_os().collect();
    let called_as = args
        .first()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let applet = if called_as == "provisionerd" || called_as == "provisionerctl" {
        called_as
    } else {
        match args.get(1).and_then(|a| a.to_str()) {
            Some(a @ ("provisionerd" | "provisionerctl")) => {
                let a = a.to_owned();
                args.remove(0);
                a
            }
            _ => {
                eprintln!(
                    "usage: provisioner provisionerd|provisionerctl [ARGS...]\n(or call it through a symlink of either name)"
                );
                return ExitCode::from(2);
            }
        }
    };
    let result = if applet == "provisionerd" {
        provisionerd(DaemonArgs::parse_from(args))
    } else {
        provisionerctl(CtlArgs::parse_from(args))
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{applet}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn provisionerd(args: DaemonArgs) -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .with_max_level(args.log_level)
        .init();
    if let Some(path) = args.check {
        return Ok(match Config::load(&path) {
            Ok(cfg) => {
                for option in cfg.not_enforced() {
                    eprintln!(
                        "{}: warning: {}",
                        path.display(),
                        Config::not_enforced_warning(option)
                    );
                }
                println!("{}: ok", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        });
    }
    if args.flush {
        daemon::remove_tables()?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.print_config {
        let cfg = Config::load(&args.config)?;
        print!("{}", cfg.shell_vars());
        return Ok(ExitCode::SUCCESS);
    }
    if args.print_ruleset {
        let cfg = Config::load(&args.config)?;
        print!("{}", Ruleset::build(&cfg, &Snapshot::default()).script());
        return Ok(ExitCode::SUCCESS);
    }
    daemon::run(daemon::Paths {
        config: args.config,
        control: args.control,
        run_dir: args.run_dir,
    })?;
    Ok(ExitCode::SUCCESS)
}

fn provisionerctl(args: CtlArgs) -> anyhow::Result<ExitCode> {
    let secs = |d: Option<Duration>| d.map(|d| d.as_secs());
    let request = match args.command {
        CtlCommand::Status => Request::Status,
        CtlCommand::Window {
            action: WindowAction::Open { duration },
        } => Request::WindowOpen {
            secs: secs(duration),
        },
        CtlCommand::Window {
            action: WindowAction::Close,
        } => Request::WindowClose,
        CtlCommand::Evict { mac, ban } => Request::Evict {
            mac,
            ban_secs: secs(ban),
        },
        CtlCommand::Ban { mac, duration } => Request::Ban {
            mac,
            secs: secs(duration),
        },
        CtlCommand::Unban { mac } => Request::Unban { mac },
        CtlCommand::Reload => Request::Reload,
        CtlCommand::Clients => Request::Clients,
        CtlCommand::Leases => {
            let leases: Vec<protocol::Lease> = Firewall::open()?
                .snapshot(Instant::now())?
                .leases
                .iter()
                .map(|l| protocol::Lease {
                    mac: l.mac,
                    ip: l.ip,
                    expires_in: l.remaining.as_secs(),
                })
                .collect();
            if args.json {
                println!("{}", protocol::encode_leases(&leases));
            } else {
                print!("{}", human::leases(&leases));
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    let reply = match control::request(&args.socket, &request) {
        Ok(reply) => reply,
        Err(e) => {
            eprintln!(
                "provisionerctl: {}: {e} (is provisionerd running?)",
                args.socket.display()
            );
            return Ok(ExitCode::from(3));
        }
    };
    Ok(match reply {
        Reply::Error(f) => {
            eprintln!("provisionerctl: {f}");
            ExitCode::FAILURE
        }
        reply if args.json => {
            println!("{}", reply.encode());
            ExitCode::SUCCESS
        }
        reply => {
            print!("{}", human::reply(&reply));
            ExitCode::SUCCESS
        }
    })
}
