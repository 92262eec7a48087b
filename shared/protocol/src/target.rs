//! Which check targets are refused: a hub, or whoever registered a
//! website, must not be able to aim a validator at the validator's own
//! network (loopback services, the LAN, a cloud metadata endpoint at
//! 169.254.169.254), nor at a port where a text protocol would take the
//! HTTP request for commands (the Fetch standard's bad ports, e.g. SMTP's
//! 25). The validator applies it to every address it connects to; the
//! owners' API applies the same rules when a website is registered.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::limits::BLOCKED_PORTS;

/// A target that is not checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("refused: {0} is a private/loopback/link-local address")]
    Address(IpAddr),
    /// One of [`BLOCKED_PORTS`]: the Fetch standard's "bad ports", where a
    /// text protocol (SMTP, IRC, ...) could take an HTTP request for
    /// commands. Browsers refuse them too.
    #[error("refused: port {0} is reserved for another protocol")]
    Port(u16),
}

/// True for addresses a public check has no business reaching.
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_forbidden_v4(v4),
        IpAddr::V6(v6) => is_forbidden_v6(v6),
    }
}

fn is_forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_broadcast()
        // 0.0.0.0/8: Linux routes connects to it to the local host.
        || a == 0
        // 100.64.0.0/10: carrier-grade NAT, i.e. someone's internal network.
        || (a == 100 && (64..128).contains(&b))
        // 192.0.0.0/24: IETF protocol assignments (DS-Lite, NAT64 discovery).
        || (a == 192 && b == 0 && ip.octets()[2] == 0)
        // 198.18.0.0/15: benchmarking, used inside labs and some clouds.
        || (a == 198 && (b & 0xfe) == 18)
        // 240.0.0.0/4: reserved, never a public host.
        || a >= 240
}

fn is_forbidden_v6(ip: Ipv6Addr) -> bool {
    // An IPv4 address wrapped in IPv6 reaches the same host as the IPv4 one.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_forbidden_v4(v4);
    }
    let seg = ip.segments();
    let v4 = |hi: u16, lo: u16| {
        let [a, b] = hi.to_be_bytes();
        let [c, d] = lo.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    // 64:ff9b::/96, the NAT64 well-known prefix, embeds an IPv4 address too.
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return is_forbidden_v4(v4(seg[6], seg[7]));
    }
    // 64:ff9b:1::/48, local-use NAT64 (RFC 8215): always an operator's own
    // translator, whatever address it embeds.
    if seg[..3] == [0x64, 0xff9b, 1] {
        return true;
    }
    // 2002::/16, 6to4: the next 32 bits are an IPv4 address, reached
    // through a relay; refused when that address is.
    if seg[0] == 0x2002 && is_forbidden_v4(v4(seg[1], seg[2])) {
        return true;
    }
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        // fc00::/7 unique local
        || (seg[0] & 0xfe00) == 0xfc00
        // fe80::/10 link-local, and fec0::/10 (deprecated site-local)
        || (seg[0] & 0xffc0) == 0xfe80
        || (seg[0] & 0xffc0) == 0xfec0
        // ::/96, the deprecated IPv4-compatible form (includes ::1 and ::)
        || seg[..6] == [0; 6]
}

/// The host of `url` if it is an IP literal (the only kind reqwest connects
/// to without asking the resolver).
pub fn literal_ip(url: &url::Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
        url::Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
        url::Host::Domain(_) => None,
    }
}

/// Which addresses and ports a check may reach.
#[derive(Debug, Clone, Copy)]
pub struct TargetPolicy {
    forbidden: fn(IpAddr) -> bool,
    /// Refuse [`BLOCKED_PORTS`].
    block_ports: bool,
}

impl TargetPolicy {
    /// Refuse everything [`is_forbidden`] names, and [`BLOCKED_PORTS`]
    /// (production).
    pub const PUBLIC_ONLY: Self = Self {
        forbidden: is_forbidden,
        block_ports: true,
    };
    /// Reach anything, any port (tests and demos on one machine).
    pub const ANY: Self = Self {
        forbidden: |_| false,
        block_ports: false,
    };

    pub fn new(allow_private: bool) -> Self {
        if allow_private {
            Self::ANY
        } else {
            Self::PUBLIC_ONLY
        }
    }

    /// A policy with its own idea of forbidden, so tests on loopback can
    /// exercise refusal while still reaching their own server.
    /// Ports are refused as in production.
    #[doc(hidden)]
    pub fn custom(forbidden: fn(IpAddr) -> bool) -> Self {
        Self {
            forbidden,
            block_ports: true,
        }
    }

    pub fn check(&self, ip: IpAddr) -> Result<(), Refused> {
        if (self.forbidden)(ip) {
            Err(Refused::Address(ip))
        } else {
            Ok(())
        }
    }

    /// `Err(Refused)` if `url` names a forbidden IP literal or a blocked
    /// port (the scheme's default port counts).
    pub fn check_url(&self, url: &url::Url) -> Result<(), Refused> {
        if self.block_ports {
            if let Some(port) = url
                .port_or_known_default()
                .filter(|p| BLOCKED_PORTS.contains(p))
            {
                return Err(Refused::Port(port));
            }
        }
        literal_ip(url).map_or(Ok(()), |ip| self.check(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(addrs: &[&str], forbidden: bool) {
        for a in addrs {
            let ip: IpAddr = a.parse().unwrap();
            assert_eq!(is_forbidden(ip), forbidden, "{a}");
        }
    }

    #[test]
    fn classifies_ipv4() {
        check(
            &[
                "127.0.0.1",
                "127.255.255.254",
                "10.0.0.1",
                "172.16.0.1",
                "172.31.255.255",
                "192.168.1.1",
                "169.254.169.254",
                "169.254.0.1",
                "0.0.0.0",
                "0.1.2.3",
                "100.64.0.1",
                "100.127.255.255",
                "224.0.0.1",
                "239.255.255.250",
                "255.255.255.255",
                "240.0.0.1",
            ],
            true,
        );
        check(
            &[
                "1.1.1.1",
                "8.8.8.8",
                "172.15.255.255",
                "172.32.0.1",
                "100.63.255.255",
                "100.128.0.1",
                "192.169.0.1",
                "169.255.0.1",
                "223.255.255.255",
            ],
            false,
        );
    }

    #[test]
    fn classifies_ipv6_and_mapped() {
        check(
            &[
                "::1",
                "::",
                "fc00::1",
                "fd12:3456::1",
                "fe80::1",
                "febf::1",
                "fec0::1",
                "ff02::1",
                "::ffff:127.0.0.1",
                "::ffff:10.1.2.3",
                "::ffff:169.254.169.254",
                "::ffff:100.64.0.1",
                "64:ff9b::a9fe:a9fe",
                "::127.0.0.1",
            ],
            true,
        );
        check(
            &[
                "2001:4860:4860::8888",
                "2606:4700::1111",
                "::ffff:1.1.1.1",
                "64:ff9b::808:808",
                "fbff::1",
                "fe00::1",
            ],
            false,
        );
    }

    #[test]
    fn classifies_special_purpose_ranges() {
        check(
            &[
                // 192.0.0.0/24, IETF protocol assignments
                "192.0.0.1",
                "192.0.0.255",
                // 198.18.0.0/15, benchmarking
                "198.18.0.1",
                "198.19.255.255",
                // 64:ff9b:1::/48, local-use NAT64: a translator of one's own
                "64:ff9b:1::808:808",
                "64:ff9b:1:ffff::1",
                // 6to4 (2002::/16) of a refused IPv4 address
                "2002:7f00:1::1",
                "2002:a00:1::",
                "2002:a9fe:a9fe::1",
                "2002:c612:1::",
                // NAT64 well-known prefix of a new range
                "64:ff9b::c000:1",
            ],
            true,
        );
        check(
            &[
                "192.0.1.1",
                "191.255.255.255",
                "198.17.255.255",
                "198.20.0.1",
                "64:ff9b:2::1",
                "2002:808:808::1",
                "2003::1",
            ],
            false,
        );
    }

    /// The Fetch standard's bad ports: a text protocol could take an HTTP
    /// request for commands. Refused on public targets, by name or literal.
    #[test]
    fn bad_ports_are_refused() {
        let u = |s: &str| url::Url::parse(s).unwrap();
        let p = TargetPolicy::PUBLIC_ONLY;
        assert_eq!(
            p.check_url(&u("http://example.com:25/")),
            Err(Refused::Port(25))
        );
        assert_eq!(
            p.check_url(&u("https://1.1.1.1:6667/")),
            Err(Refused::Port(6667))
        );
        assert_eq!(
            Refused::Port(25).to_string(),
            "refused: port 25 is reserved for another protocol"
        );
        assert_eq!(p.check_url(&u("http://example.com:8080/")), Ok(()));
        assert_eq!(p.check_url(&u("https://example.com/")), Ok(()));
        assert_eq!(
            TargetPolicy::ANY.check_url(&u("http://127.0.0.1:25/")),
            Ok(())
        );
    }

    #[test]
    fn literal_hosts_are_found_in_urls() {
        let u = |s: &str| url::Url::parse(s).unwrap();
        let check_literal = |url: &url::Url| TargetPolicy::PUBLIC_ONLY.check_url(url);
        assert_eq!(
            check_literal(&u("http://127.0.0.1:8080/x")),
            Err(Refused::Address("127.0.0.1".parse().unwrap()))
        );
        // The URL parser normalises odd IPv4 spellings, so they are caught too.
        assert_eq!(
            check_literal(&u("http://2130706433/")),
            Err(Refused::Address("127.0.0.1".parse().unwrap()))
        );
        assert_eq!(
            check_literal(&u("http://0x7f.1/")),
            Err(Refused::Address("127.0.0.1".parse().unwrap()))
        );
        assert_eq!(
            check_literal(&u("http://[::ffff:192.168.0.1]/")),
            Err(Refused::Address("::ffff:c0a8:1".parse().unwrap()))
        );
        assert_eq!(check_literal(&u("http://example.com/")), Ok(()));
        assert_eq!(check_literal(&u("http://1.1.1.1/")), Ok(()));
        assert_eq!(TargetPolicy::ANY.check_url(&u("http://127.0.0.1/")), Ok(()));
        assert_eq!(
            Refused::Address("169.254.169.254".parse().unwrap()).to_string(),
            "refused: 169.254.169.254 is a private/loopback/link-local address"
        );
    }
}
