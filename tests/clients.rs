//! `provisionerctl clients` and `status` in the netns rig: each client's bytes and packets
//! as the kernel counted them, kept across a reload and a restart; the status fields.

mod rig;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use provisioner::control::Reply;
use provisioner::control::protocol::{StationKind, StationRow};
use rig::*;

const BULK_PORT: u16 = 9000;
const DOWN: usize = 1 << 20;
const UP: usize = 200_000;

/// The rig's config, with the bulk server allowed too.
fn cfg() -> String {
    config(&format!(
        "\nconfig allow 'bulk'\n\tlist address '{CLOUD_ALLOWED}'\n\tlist port '{BULK_PORT}'\n\nconfig limits\n\toption max_clients '5'\n\toption total_rate_up '100mbit'\n"
    ))
}

/// A server on the allowed cloud address: reads what a client sends until it stops
/// sending, then sends [`DOWN`] bytes and closes. Serves one connection.
fn bulk_server(rig: &Rig) -> std::thread::JoinHandle<usize> {
    let listener = rig
        .cloud()
        .run(|| TcpListener::bind(SocketAddr::new(CLOUD_ALLOWED.into(), BULK_PORT)))
        .expect("bind the bulk server");
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut got = Vec::new();
        s.read_to_end(&mut got).expect("read the upload");
        s.write_all(&vec![7u8; DOWN]).expect("send the download");
        got.len()
    })
}

/// Client `i` uploads [`UP`] bytes and downloads [`DOWN`] through the bulk server.
fn transfer(rig: &Rig, i: usize) {
    let server = bulk_server(rig);
    let received = rig.client(i).run(|| {
        let mut s = TcpStream::connect_timeout(
            &SocketAddr::new(CLOUD_ALLOWED.into(), BULK_PORT),
            Duration::from_secs(5),
        )
        .expect("connect to the bulk server");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(&vec![1u8; UP]).expect("upload");
        s.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).expect("download");
        got.len()
    });
    assert_eq!(received, DOWN, "the download arrived whole");
    assert_eq!(server.join().unwrap(), UP, "the upload arrived whole");
}

fn stations(rig: &Rig) -> Vec<StationRow> {
    match rig.ctl(&["clients"]) {
        Reply::Clients(c) => c.stations,
        other => panic!("clients answered {other:?}"),
    }
}

fn row(rows: &[StationRow], i: usize) -> StationRow {
    let mac = format!("02:00:00:00:00:{i:02x}");
    rows.iter()
        .find(|r| r.mac.to_string() == mac)
        .unwrap_or_else(|| panic!("no row for {mac} in {rows:#?}"))
        .clone()
}

/// Client 1's counts are at least what it moved, client 2's (idle) near nothing.
fn assert_counted(rig: &Rig, when: &str) -> StationRow {
    let rows = stations(rig);
    let busy = row(&rows, 1);
    assert_eq!(busy.state, StationKind::Admitted, "{when}: {busy:?}");
    assert!(busy.bytes_down >= DOWN as u64, "{when}: {busy:?}");
    assert!(busy.bytes_up >= UP as u64, "{when}: {busy:?}");
    // Headers add to the payload; a count far beyond it would be counting something else.
    assert!(busy.bytes_down < 2 * DOWN as u64, "{when}: {busy:?}");
    assert!(
        busy.packets_down > 0 && busy.packets_up > 0,
        "{when}: {busy:?}"
    );
    let idle = row(&rows, 2);
    assert_eq!(idle.state, StationKind::Admitted, "{when}: {idle:?}");
    assert!(
        idle.bytes_up < 2000 && idle.bytes_down < 2000,
        "{when}: {idle:?}"
    );
    busy
}

#[test]
fn clients_shows_what_the_kernel_counted_and_keeps_it_across_reload_and_restart() {
    let rig = Rig::new(2);
    let mut daemon = rig.start_daemon(&cfg());
    let ip1 = rig.dhcp(1).expect("lease 1");
    rig.dhcp(2).expect("lease 2");
    transfer(&rig, 1);

    let first = assert_counted(&rig, "after the transfer");
    assert_eq!(first.ip, Some(ip1));
    let at = first.admitted_at.clone().expect("admitted at");
    assert!(
        at.starts_with("20") && at.ends_with('Z') && at.len() == 20,
        "{at}"
    );
    assert!(first.session_left.is_some() && first.age.is_some());

    // For people: a table, bytes in units.
    let out = rig.ctl_output(&["clients"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("MAC "), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("02:00:00:00:00:01"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains("admitted") && line.contains(" MB") && line.contains(&ip1.to_string()),
        "{line}"
    );

    // A reload rebuilds the table: the counts come along.
    assert!(matches!(rig.ctl(&["reload"]), Reply::Reloaded(_)));
    let reloaded = assert_counted(&rig, "after reload");
    assert!(reloaded.bytes_down >= first.bytes_down, "{reloaded:?}");

    // So does a restart (the new daemon takes them over from the kernel).
    daemon.kill9();
    let _daemon = rig.start_daemon(&cfg());
    let restarted = assert_counted(&rig, "after a restart");
    assert!(restarted.bytes_down >= first.bytes_down, "{restarted:?}");
    assert!(restarted.bytes_up >= first.bytes_up, "{restarted:?}");
    // And they go on counting (`clients` reads the kernel's counts at most once a second).
    transfer(&rig, 1);
    let grown = |r: &StationRow| r.bytes_down >= first.bytes_down + DOWN as u64;
    assert!(
        wait_until(
            Duration::from_secs(5),
            Duration::from_millis(200),
            || grown(&row(&stations(&rig), 1))
        ),
        "{:?}",
        row(&stations(&rig), 1)
    );
}

#[test]
fn status_says_the_limit_rates_version_and_config() {
    let rig = Rig::new(1);
    let _daemon = rig.start_daemon(&cfg());
    rig.dhcp(1).expect("lease");
    let s = rig.status();
    assert_eq!(s.clients.len(), 1);
    assert_eq!(s.max_clients, 5);
    assert_eq!(s.window_mode, "always");
    assert!(s.window.open && s.window_until.is_none(), "{s:?}");
    assert_eq!(s.rates.total_up, Some(12_500_000));
    assert_eq!(s.rates.client_up, None);
    assert!(s.rates.dns_qps_client > 0 && s.rates.dns_qps_total > 0);
    assert_eq!(s.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(s.config, rig.config_path().display().to_string());
    assert!(s.config_loaded_at.ends_with('Z'), "{s:?}");
    assert!(s.uptime < 60, "{s:?}");

    let out = rig.ctl_output(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("clients  1 of 5\n"), "{text}");
    assert!(
        text.contains(&format!("version  {}\n", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    assert!(text.contains("network up 12.5 MB/s"), "{text}");
}
