//! Audit events: every decision the core takes, in the product's words. The daemon logs
//! each one as a structured line (and later serves them on the control socket).

use std::fmt;
use std::net::Ipv4Addr;

use super::MacAddr;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    LeaseGranted {
        mac: MacAddr,
        ip: Ipv4Addr,
    },
    LeaseRenewed {
        mac: MacAddr,
        ip: Ipv4Addr,
    },
    LeaseReleased {
        mac: MacAddr,
        ip: Ipv4Addr,
    },
    LeaseExpired {
        mac: MacAddr,
        ip: Ipv4Addr,
    },
    LeaseDeclined {
        mac: MacAddr,
        ip: Ipv4Addr,
    },
    /// A REQUEST for an address the client may not have (NAK).
    LeaseRefused {
        mac: MacAddr,
        ip: Ipv4Addr,
    },
    /// Every address of the pool (one per client allowed) is taken.
    PoolExhausted {
        mac: MacAddr,
    },
    /// A binding read back from the kernel after a restart.
    LeaseRestored {
        mac: MacAddr,
        ip: Ipv4Addr,
    },
    /// A binding ended because the configuration no longer has room for it.
    LeaseRevoked {
        mac: MacAddr,
        ip: Ipv4Addr,
    },
}

impl Event {
    /// A stable, greppable name for the event kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::LeaseGranted { .. } => "lease_granted",
            Event::LeaseRenewed { .. } => "lease_renewed",
            Event::LeaseReleased { .. } => "lease_released",
            Event::LeaseExpired { .. } => "lease_expired",
            Event::LeaseDeclined { .. } => "lease_declined",
            Event::LeaseRefused { .. } => "lease_refused",
            Event::PoolExhausted { .. } => "pool_exhausted",
            Event::LeaseRestored { .. } => "lease_restored",
            Event::LeaseRevoked { .. } => "lease_revoked",
        }
    }

    pub fn mac(&self) -> MacAddr {
        match self {
            Event::LeaseGranted { mac, .. }
            | Event::LeaseRenewed { mac, .. }
            | Event::LeaseReleased { mac, .. }
            | Event::LeaseExpired { mac, .. }
            | Event::LeaseDeclined { mac, .. }
            | Event::LeaseRefused { mac, .. }
            | Event::PoolExhausted { mac }
            | Event::LeaseRestored { mac, .. }
            | Event::LeaseRevoked { mac, .. } => *mac,
        }
    }

    pub fn ip(&self) -> Option<Ipv4Addr> {
        match self {
            Event::LeaseGranted { ip, .. }
            | Event::LeaseRenewed { ip, .. }
            | Event::LeaseReleased { ip, .. }
            | Event::LeaseExpired { ip, .. }
            | Event::LeaseDeclined { ip, .. }
            | Event::LeaseRefused { ip, .. }
            | Event::LeaseRestored { ip, .. }
            | Event::LeaseRevoked { ip, .. } => Some(*ip),
            Event::PoolExhausted { .. } => None,
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "event={} mac={}", self.kind(), self.mac())?;
        if let Some(ip) = self.ip() {
            write!(f, " ip={ip}")?;
        }
        Ok(())
    }
}
