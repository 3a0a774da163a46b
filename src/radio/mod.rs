//! The radio edge: the hostapd that runs the hidden setup network.
//!
//! The daemon never drives the radio itself. hostapd owns it, and [`hostapd`] talks to
//! hostapd's control interface: it learns who joins and leaves from hostapd's events, reads
//! the station table to reconcile, and asks hostapd to remove or refuse a station.
//! [`link`] keeps that connection alive and, in managed mode, runs hostapd itself.

pub mod hostapd;
pub mod link;
