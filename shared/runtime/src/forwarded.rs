//! The client's address behind load balancers: which peers are trusted
//! ([`TrustedProxies`], parsed once from a setting) and what their
//! `X-Forwarded-For` says ([`client_ip`]).

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

/// Load balancers and proxies whose `X-Forwarded-For` is believed: IP
/// addresses and CIDR ranges (pod and node networks). Parsed once at start
/// ([`TrustedProxies::parse`]); empty trusts no one.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

/// One entry of a trusted-proxy list that is neither an IP address nor a
/// CIDR range. The services put their variable's name in front.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{entry:?} {problem}")]
pub struct BadProxy {
    pub entry: String,
    pub problem: String,
}

impl TrustedProxies {
    /// A comma-separated list of IP addresses (`127.0.0.1`, `fd00::1`) and
    /// CIDR ranges (`10.0.0.0/8`, `fd00::/8`); blanks around entries and
    /// empty entries are ignored. A range with host bits set
    /// (`10.0.0.1/8`) is refused rather than widened: it is more likely a
    /// typo for one address than a wish to trust the whole network.
    pub fn parse(list: &str) -> Result<Self, BadProxy> {
        list.split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(parse_entry)
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// Whether `ip` is one of them. An IPv4 peer seen on a dual-stack
    /// socket as `::ffff:a.b.c.d` matches the IPv4 entries too.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let canonical = ip.to_canonical();
        self.0
            .iter()
            .any(|net| net.contains(&ip) || net.contains(&canonical))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn parse_entry(entry: &str) -> Result<IpNet, BadProxy> {
    let bad = |problem: String| BadProxy {
        entry: entry.to_string(),
        problem,
    };
    if !entry.contains('/') {
        return entry
            .parse::<IpAddr>()
            .map(IpNet::from)
            .map_err(|_| bad("is not an IP address or a CIDR range".into()));
    }
    let net: IpNet = entry.parse().map_err(|_| {
        bad("is not a CIDR range (an address, a slash and a prefix length of at most 32 for IPv4, 128 for IPv6)".into())
    })?;
    if net.trunc() != net {
        return Err(bad(format!(
            "has host bits set: write {} for the network, or {} for one address",
            net.trunc(),
            net.addr()
        )));
    }
    Ok(net)
}

impl fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, net) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            // One address reads as itself, not as `a.b.c.d/32`.
            if net.prefix_len() == net.max_prefix_len() {
                write!(f, "{}", net.addr())?;
            } else {
                write!(f, "{net}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustedProxies({self})")
    }
}

/// The client's address. From a peer that is not a trusted proxy, the
/// peer's own: its `X-Forwarded-For` is ignored. From a trusted peer, walk
/// `X-Forwarded-For` (`forwarded_for`: the header's values in order, each
/// a comma-separated list) from the right, where each proxy appended the
/// address it was connected from: skip entries that are themselves trusted
/// proxies, and return the first that is not. Entries left of it are the
/// client's word and never read. If every entry is trusted, the leftmost.
///
/// An entry that is not a bare IP address (garbage, `unknown`, an
/// address with a port) stops the walk: the answer is the last valid entry
/// to its right, or the peer if it was the rightmost. Whatever stands left
/// of an entry that cannot be read cannot be vouched for, so it is never
/// believed; the cost of a proxy that writes such entries is that its
/// clients share the nearest readable proxy's address.
pub fn client_ip<'a>(
    trusted: &TrustedProxies,
    peer: IpAddr,
    forwarded_for: impl DoubleEndedIterator<Item = &'a str>,
) -> IpAddr {
    if !trusted.contains(peer) {
        return peer;
    }
    let mut client = peer;
    for entry in forwarded_for.flat_map(|v| v.split(',')).rev() {
        let Ok(ip) = entry.trim().parse::<IpAddr>() else {
            break;
        };
        client = ip;
        if !trusted.contains(ip) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn proxies(list: &str) -> TrustedProxies {
        TrustedProxies::parse(list).unwrap()
    }

    /// The client `client_ip` finds behind `peer` with these header values.
    fn check(trusted: &str, peer: &str, xff: &[&str], expected: &str) {
        let got = client_ip(&proxies(trusted), ip(peer), xff.iter().copied());
        assert_eq!(
            got,
            ip(expected),
            "trusted {trusted:?}, peer {peer}, X-Forwarded-For {xff:?}"
        );
    }

    #[test]
    fn a_single_trusted_address_is_believed() {
        check("127.0.0.1", "127.0.0.1", &["5.6.7.8"], "5.6.7.8");
        // The header's values in order, the last one appended by the peer.
        check(
            "127.0.0.1",
            "127.0.0.1",
            &["6.6.6.6, 1.2.3.4", "5.6.7.8"],
            "5.6.7.8",
        );
        check("127.0.0.1", "127.0.0.1", &[], "127.0.0.1");
        // Only that address: its neighbour is not trusted.
        check("127.0.0.1", "127.0.0.2", &["5.6.7.8"], "127.0.0.2");
    }

    #[test]
    fn a_v4_range_trusts_every_address_in_it() {
        let pods = "10.0.0.0/8";
        check(pods, "10.1.2.3", &["5.6.7.8"], "5.6.7.8");
        check(pods, "10.255.255.255", &["5.6.7.8"], "5.6.7.8");
        check(pods, "11.0.0.1", &["5.6.7.8"], "11.0.0.1");
        // An IPv4 peer on a dual-stack socket.
        check(pods, "::ffff:10.0.0.7", &["5.6.7.8"], "5.6.7.8");
    }

    #[test]
    fn a_v6_range_trusts_every_address_in_it() {
        let pods = "fd00::/8";
        check(pods, "fd12:3456::1", &["2001:db8::9"], "2001:db8::9");
        check(pods, "fe80::1", &["2001:db8::9"], "fe80::1");
        check(pods, "10.0.0.1", &["2001:db8::9"], "10.0.0.1");
    }

    #[test]
    fn an_untrusted_peer_s_header_is_ignored() {
        check(
            "10.0.0.0/8",
            "192.0.2.1",
            &["10.0.0.1", "5.6.7.8"],
            "192.0.2.1",
        );
        check("", "10.0.0.1", &["5.6.7.8"], "10.0.0.1");
    }

    /// Client -> node proxy (10.0.0.5) -> ingress pod (10.1.0.9) -> hub:
    /// both proxies are trusted and skipped, the client's forged entry on
    /// the left is never read.
    #[test]
    fn a_chain_of_trusted_proxies_is_walked_from_the_right() {
        let nets = "10.0.0.0/16, 10.1.0.0/16";
        check(
            nets,
            "10.1.0.9",
            &["1.1.1.1, 203.0.113.7, 10.0.0.5"],
            "203.0.113.7",
        );
        // Split over two header lines, as each proxy may add its own.
        check(
            nets,
            "10.1.0.9",
            &["1.1.1.1, 203.0.113.7", "10.0.0.5"],
            "203.0.113.7",
        );
        // Every entry trusted: the leftmost.
        check(nets, "10.1.0.9", &["10.0.0.3, 10.0.0.5"], "10.0.0.3");
    }

    /// Garbage stops the walk at the last valid entry right of it (or the
    /// peer): nothing left of it is believed.
    #[test]
    fn garbage_stops_the_walk() {
        let nets = "10.0.0.0/8";
        check(nets, "10.0.0.1", &["garbage"], "10.0.0.1");
        check(nets, "10.0.0.1", &[""], "10.0.0.1");
        check(nets, "10.0.0.1", &["5.6.7.8, unknown"], "10.0.0.1");
        check(nets, "10.0.0.1", &["5.6.7.8, junk, 10.0.0.2"], "10.0.0.2");
        check(nets, "10.0.0.1", &["5.6.7.8:443"], "10.0.0.1");
        // Garbage on the client's side of the first untrusted entry is
        // never reached.
        check(nets, "10.0.0.1", &["junk, 5.6.7.8"], "5.6.7.8");
    }

    #[test]
    fn lists_parse_addresses_and_ranges() {
        let p = proxies(" 10.0.0.0/8,fd00::/8 ,127.0.0.1,, ::1 ");
        assert_eq!(p.to_string(), "10.0.0.0/8,fd00::/8,127.0.0.1,::1");
        assert!(p.contains(ip("10.9.9.9")) && p.contains(ip("fdff::1")));
        assert!(p.contains(ip("127.0.0.1")) && !p.contains(ip("127.0.0.2")));
        assert!(proxies("").is_empty() && proxies(" , ").is_empty());
    }

    #[test]
    fn a_bad_entry_is_named_with_the_reason() {
        for (list, entry, reason) in [
            ("10.0.0.0/33", "10.0.0.0/33", "prefix length"),
            ("10.0.0.1,fd00::/129", "fd00::/129", "prefix length"),
            ("10.0.0.0/x", "10.0.0.0/x", "not a CIDR range"),
            ("127.0.0.1, localhost", "localhost", "not an IP address"),
            ("10.0.0.1/8", "10.0.0.1/8", "write 10.0.0.0/8"),
            ("1.2.3.4:80", "1.2.3.4:80", "not an IP address"),
        ] {
            let e = TrustedProxies::parse(list).unwrap_err();
            assert_eq!(e.entry, entry);
            let shown = e.to_string();
            assert!(
                shown.contains(&format!("{entry:?}")) && shown.contains(reason),
                "{list}: {shown}"
            );
        }
    }
}
