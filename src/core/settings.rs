//! What the provisioner is told by its configuration, in its own words. The edge builds it
//! from a `Config` (`config` depends on `core`, never the other way round), so every
//! decision is made from these values and nothing else; derived values (the pool, hostapd's
//! station limit) are computed here once, for the daemon and the OpenWrt scripts alike.

use std::net::Ipv4Addr;
use std::time::Duration;

use ipnet::Ipv4Net;

use super::allow::{AllowEntry, TtlPolicy};
use super::profile::Profile;
use super::stations::Policy;
use super::window::WindowSettings;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The router's address on the provisioning subnet: DHCP server, DNS, gateway.
    pub router: Ipv4Addr,
    pub subnet: Ipv4Net,
    /// Never reachable from the provisioning network, whatever the allow-list says.
    pub protect: Vec<Ipv4Net>,
    /// Stations come from hostapd; without a radio, a station is whoever asks for DHCP.
    pub radio: bool,
    pub pool_start: Ipv4Addr,
    /// `stations.max_clients` addresses and the spare ones for waiting newcomers.
    pub pool_size: u16,
    pub lease_time: Duration,
    pub stations: Policy,
    pub window: WindowSettings,
    pub allow: Vec<AllowEntry>,
    /// Vendor profiles: by MAC prefix, which allow entries and limits hold for a client.
    pub profiles: Vec<Profile>,
    pub ttl: TtlPolicy,
    /// DNS questions per second, per client and for all.
    pub client_qps: u32,
    pub total_qps: u32,
    /// What violations, floods and spoofing cost a client.
    pub threat: super::threat::ThreatPolicy,
}

impl Settings {
    /// hostapd's station limit: one more than the clients admitted at once, so that the
    /// provisioner sees a newcomer (and decides) when the spots are full.
    pub fn radio_max_stations(&self) -> u32 {
        u32::from(self.stations.max_clients) + 1
    }
}
