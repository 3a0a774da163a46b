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
use provisioner::core::oui::MacPrefix;
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
    /// Log lines as key=value text, or as JSON objects (audit events with their seq, ts,
    /// level, event and fields).
    #[arg(long, value_name = "FORMAT", default_value = "text")]
    log_format: provisioner::logging::Format,
    /// Log to syslog (logd on OpenWrt: `logread -e provisioner`) through this socket
    /// rather than to stderr.
    #[arg(long, value_name = "SOCKET", num_args = 0..=1, default_missing_value = "/dev/log")]
    syslog: Option<PathBuf>,
    /// The control socket provisionerctl talks to.
    #[arg(long, value_name = "PATH", default_value = control::DEFAULT_SOCKET)]
    control: PathBuf,
    /// Runtime files (a managed hostapd's config, control sockets).
    #[arg(long, value_name = "DIR", default_value = "/var/run/provisioner")]
    run_dir: PathBuf,
    /// ubusd's socket, where the daemon provides the ubus object `provisioner` (it keeps
    /// trying while there is no ubusd); `none`: no ubus object.
    #[arg(long, value_name = "SOCKET", default_value = provisioner::ubus::DEFAULT_SOCKET)]
    ubus: PathBuf,
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
    /// The audit log: the events the daemon keeps (the last 1,024 decisions), each with its
    /// number, time and fields.
    Events {
        /// Only those numbered after SEQ (a script passes the last number it saw).
        #[arg(long, value_name = "SEQ")]
        since: Option<u64>,
        /// Then each new event as it happens, until interrupted.
        #[arg(short, long)]
        follow: bool,
    },
    /// The MAC/IP bindings the kernel holds (read from the kernel, works without the daemon).
    Leases,
    /// The allow-list: list it, or add and remove entries (written back to the config
    /// file, through uci for a UCI config, and applied at once).
    Allow {
        #[command(subcommand)]
        action: AllowAction,
    },
    /// The daemon's counters in the Prometheus text format (clients, decisions by reason,
    /// traffic, DNS replies, set-batch latency, window state).
    Metrics,
    /// Every station: admitted (since when, session left), waiting, banned, turned away;
    /// bytes and packets up and down as the kernel counted them.
    Clients,
}

#[derive(Subcommand)]
enum AllowAction {
    /// Each entry's domains, addresses, protocol, ports and addresses learned now.
    List {
        /// Only this entry.
        name: Option<String>,
    },
    /// Add an entry (a name not in use): what a config `allow` section holds.
    Add {
        /// Letters, digits and '_' (a uci section name).
        name: String,
        /// A name or *.suffix its clients may resolve (repeatable).
        #[arg(long = "domain", value_name = "NAME")]
        domains: Vec<String>,
        /// An IPv4 address or network (CIDR) (repeatable).
        #[arg(long = "address", value_name = "ADDR")]
        addresses: Vec<String>,
        /// tcp (the default) or udp.
        #[arg(long, value_name = "PROTO")]
        proto: Option<String>,
        /// A port or range, 443 or 8000-8100 (repeatable; default 443).
        #[arg(long = "port", value_name = "PORT")]
        ports: Vec<String>,
        /// The vendor profile (a `config profile` section) whose clients it is for;
        /// without it, for clients of no profile.
        #[arg(long, value_name = "PROFILE")]
        profile: Option<String>,
    },
    /// Remove entries (all of them, or none if one is unknown); open connections to what
    /// only they allowed are ended.
    Remove {
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
}

#[derive(Subcommand)]
enum WindowAction {
    /// Open it, for the configured duration or DURATION: 5 to 60 minutes (15 is minutes;
    /// 15m, 1h, 900s also do).
    Open {
        #[arg(value_parser = parse_window)]
        duration: Option<Duration>,
        /// Only for this device: a full MAC (00:11:22:33:44:55) or a vendor prefix
        /// (00:11:22, 00:11:22:3); may be given several times. Other stations are turned
        /// away (not_expected), and the window closes when the devices completed (left
        /// after reaching their cloud) or its time runs out, whichever is first.
        #[arg(long = "for", value_name = "MAC|OUI", value_parser = parse_prefix)]
        for_: Vec<MacPrefix>,
        /// How many of the devices named with --for must complete before the window
        /// closes (default 1).
        #[arg(long, value_name = "N", requires = "for_", value_parser = clap::value_parser!(u32).range(1..))]
        count: Option<u32>,
    },
    /// Close it: the SSID goes down, clients are disconnected.
    Close,
}

fn parse_prefix(s: &str) -> Result<MacPrefix, String> {
    s.parse()
        .map_err(|e: provisioner::core::oui::BadPrefix| e.to_string())
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
    provisioner::logging::init(args.log_level, args.log_format, args.syslog.clone());
    if let Some(path) = args.check {
        return Ok(match Config::load(&path) {
            Ok(_) => {
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
    daemon::run(
        daemon::Paths {
            config: args.config,
            control: args.control,
            run_dir: args.run_dir,
            ubus: (args.ubus.as_os_str() != "none").then_some(args.ubus),
        },
        args.log_format == provisioner::logging::Format::Json,
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `events --follow`: the kept events, then each new one, printed as they come (a line
/// each, flushed, so a pipe sees them at once) until the daemon stops or stdout closes.
fn follow_events(
    socket: &std::path::Path,
    since: Option<u64>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let request = Request::Events {
        since,
        follow: true,
    };
    let (mut refused, mut closed) = (None, false);
    let mut out = std::io::stdout().lock();
    let got = control::follow(socket, &request, |reply| {
        let text = match &reply {
            Reply::Error(f) => {
                refused = Some(f.to_string());
                return false;
            }
            r if json => format!("{}\n", r.encode()),
            r => human::reply(r),
        };
        closed = out
            .write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .is_err();
        !closed
    });
    if let Err(e) = got {
        eprintln!(
            "provisionerctl: {}: {e} (is provisionerd running?)",
            socket.display()
        );
        return Ok(ExitCode::from(3));
    }
    Ok(match refused {
        Some(f) => {
            eprintln!("provisionerctl: {f}");
            ExitCode::FAILURE
        }
        // Whoever read our output (`| head`) has what it wanted.
        None if closed => ExitCode::SUCCESS,
        // The daemon stopped (or restarted): a follower is told, not left hanging.
        None => {
            eprintln!("provisionerctl: the daemon closed the connection");
            ExitCode::from(3)
        }
    })
}

fn provisionerctl(args: CtlArgs) -> anyhow::Result<ExitCode> {
    let secs = |d: Option<Duration>| d.map(|d| d.as_secs());
    let request = match args.command {
        CtlCommand::Status => Request::Status,
        CtlCommand::Window {
            action:
                WindowAction::Open {
                    duration,
                    for_,
                    count,
                },
        } => Request::WindowOpen {
            secs: secs(duration),
            for_,
            count,
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
        CtlCommand::Events {
            since,
            follow: true,
        } => return follow_events(&args.socket, since, args.json),
        CtlCommand::Events { since, .. } => Request::Events {
            since,
            follow: false,
        },
        CtlCommand::Allow {
            action: AllowAction::List { name },
        } => Request::AllowList { name },
        CtlCommand::Allow {
            action:
                AllowAction::Add {
                    name,
                    domains,
                    addresses,
                    proto,
                    ports,
                    profile,
                },
        } => Request::AllowAdd(protocol::AllowSpec {
            name,
            domains,
            addresses,
            proto,
            ports,
            profile,
        }),
        CtlCommand::Allow {
            action: AllowAction::Remove { names },
        } => Request::AllowRemove { names },
        CtlCommand::Clients => Request::Clients,
        CtlCommand::Metrics => Request::Metrics,
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
            // A script reads the daemon's error object (its kind) where it reads replies.
            if args.json {
                println!("{}", Reply::Error(f.clone()).encode());
            }
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
