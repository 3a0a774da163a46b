//! The operator's alarm hook (`config threat` / `option alarm_command`): run by
//! `/bin/sh -c` for each alarm event, with the event as one JSON line on stdin and its
//! fields in `PROVISIONER_*` variables (`PROVISIONER_EVENT=alarm`, `PROVISIONER_SEQ`,
//! `PROVISIONER_TS`, `PROVISIONER_MAC`, `PROVISIONER_CAUSE`, `PROVISIONER_IP`...).
//!
//! One at a time, on a thread of its own: the daemon's loop only queues an alarm (at most
//! [`QUEUED`] wait; more are dropped with a warning), so a slow or hanging command never
//! holds it up, and a command that outlives `alarm_timeout` is killed.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::control::audit::{EventLine, Scalar};

/// Alarms that may wait for the command.
pub const QUEUED: usize = 16;

/// How often a running command is looked at to see if it ended.
const POLL: Duration = Duration::from_millis(20);

pub struct Alarms {
    queue: SyncSender<EventLine>,
}

impl Alarms {
    /// Starts the thread that runs `command` for each alarm, `timeout` at most each.
    pub fn start(command: String, timeout: Duration) -> std::io::Result<Alarms> {
        let (queue, alarms) = sync_channel::<EventLine>(QUEUED);
        std::thread::Builder::new()
            .name("alarm".into())
            .spawn(move || {
                for line in alarms {
                    let _ = run(&command, &line, timeout);
                }
            })?;
        Ok(Alarms { queue })
    }

    /// Queues an alarm for the command; never waits.
    pub fn raise(&self, line: EventLine) {
        match self.queue.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(l)) => warn!(
                "alarm_command: {QUEUED} alarms already wait for it; alarm #{} not run",
                l.seq
            ),
            Err(TrySendError::Disconnected(l)) => {
                warn!(
                    "alarm_command: its thread is gone; alarm #{} not run",
                    l.seq
                )
            }
        }
    }
}

/// The variables the command gets: `PROVISIONER_` and the upper-cased field name.
pub fn environment(line: &EventLine) -> Vec<(String, String)> {
    let mut env = vec![
        ("PROVISIONER_EVENT".to_owned(), line.event.clone()),
        ("PROVISIONER_SEQ".to_owned(), line.seq.to_string()),
        ("PROVISIONER_TS".to_owned(), line.ts.clone()),
        ("PROVISIONER_LEVEL".to_owned(), line.level.clone()),
    ];
    for (k, v) in &line.fields {
        let value = match v {
            Scalar::Num(n) => n.to_string(),
            Scalar::Str(s) => s.clone(),
        };
        env.push((format!("PROVISIONER_{}", k.to_ascii_uppercase()), value));
    }
    env
}

/// How a run ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Ran,
    Failed,
    Killed,
}

fn run(command: &str, line: &EventLine, timeout: Duration) -> Outcome {
    let started = Instant::now();
    let child = Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .envs(environment(line))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            warn!("alarm_command: cannot run /bin/sh -c {command:?}: {e}");
            return Outcome::Failed;
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its stdin is no error.
        let _ = writeln!(stdin, "{}", line.to_json());
    }
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => {
                info!("alarm_command ran for alarm #{} ({status})", line.seq);
                return Outcome::Ran;
            }
            Ok(Some(status)) => {
                warn!("alarm_command failed for alarm #{}: {status}", line.seq);
                return Outcome::Failed;
            }
            Ok(None) if started.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                warn!(
                    "alarm_command for alarm #{} still ran after {} s: killed",
                    line.seq,
                    timeout.as_secs()
                );
                return Outcome::Killed;
            }
            Ok(None) => std::thread::sleep(POLL),
            Err(e) => {
                warn!("alarm_command: waiting for it: {e}");
                return Outcome::Failed;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line() -> EventLine {
        EventLine {
            seq: 9,
            ts: "2026-12-02T01:00:00.000Z".into(),
            level: "alarm".into(),
            event: "alarm".into(),
            fields: vec![
                ("mac".into(), Scalar::Str("02:00:00:00:00:01".into())),
                ("secs".into(), Scalar::Num(86_400)),
            ],
        }
    }

    #[test]
    fn the_fields_are_variables() {
        let env = environment(&line());
        for want in [
            ("PROVISIONER_EVENT", "alarm"),
            ("PROVISIONER_SEQ", "9"),
            ("PROVISIONER_LEVEL", "alarm"),
            ("PROVISIONER_MAC", "02:00:00:00:00:01"),
            ("PROVISIONER_SECS", "86400"),
        ] {
            assert!(
                env.iter().any(|(k, v)| k == want.0 && v == want.1),
                "{want:?} not in {env:?}"
            );
        }
    }

    /// The command reads the JSON on stdin and sees the variables; one that hangs is
    /// killed at the timeout and the next still runs.
    #[test]
    fn the_command_gets_the_event_and_a_hanging_one_is_killed() {
        let dir = std::env::temp_dir().join(format!("pv-alarm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("out");
        let cmd = format!(
            "cat > {o}.tmp; echo \"$PROVISIONER_MAC $PROVISIONER_SECS\" >> {o}.tmp; mv {o}.tmp {o}",
            o = out.display()
        );
        assert_eq!(run(&cmd, &line(), Duration::from_secs(10)), Outcome::Ran);
        let got = std::fs::read_to_string(&out).unwrap();
        assert_eq!(
            got,
            format!("{}\n02:00:00:00:00:01 86400\n", line().to_json()),
            "stdin then the variables"
        );
        assert_eq!(
            run("sleep 30", &line(), Duration::from_millis(300)),
            Outcome::Killed
        );
        assert_eq!(
            run("exit 3", &line(), Duration::from_secs(10)),
            Outcome::Failed
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
