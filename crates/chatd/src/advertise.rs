//! The address a replica advertises: other replicas dial it for the part relay, and workspace
//! agents report to it (unless `--control-plane-url` says otherwise).
//!
//! A replica bound to one address advertises that address. A replica bound to every interface
//! (`0.0.0.0`, `[::]`) cannot know which of its addresses the others reach, so it needs
//! `--advertise-address`: on Kubernetes, the pod IP from the downward API.

use std::net::{IpAddr, SocketAddr};

/// Why an advertise address cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdvertiseError {
    /// Bound to every interface and no address given.
    #[error(
        "chatd listens on {listen}, every interface, so other replicas and workspace agents \
         cannot tell which address reaches it: set --advertise-address (CHATD_ADVERTISE_ADDRESS) \
         to this replica's reachable address, e.g. the pod IP (status.podIP) on Kubernetes, or \
         listen on one address"
    )]
    Wildcard {
        /// The listen address.
        listen: SocketAddr,
    },
    /// The scheme given disagrees with the listener: `https://` needs `--tls-cert`, and a TLS
    /// listener cannot be reached with `http://`.
    #[error("--advertise-address {given:?}: {why}")]
    Scheme {
        /// What was given.
        given: String,
        /// Which way it disagrees.
        why: &'static str,
    },
    /// The given address is not usable; the text says why.
    #[error("--advertise-address {given:?}: {why}")]
    Invalid {
        /// What was given.
        given: String,
        /// Why it is refused.
        why: &'static str,
    },
}

/// The URL this replica advertises, for a listener bound to `bound` that speaks TLS when `tls`:
/// `advertise` when given (`HOST`, `HOST:PORT`, `IP`, `IP:PORT`, `[IPv6]:PORT` or an
/// `http(s)://HOST[:PORT]` URL; a missing port is the listener's, a missing scheme `https` with
/// TLS and `http` without), else the bound address when it is a specific one.
pub(crate) fn advertised_url(
    advertise: Option<&str>,
    bound: SocketAddr,
    tls: bool,
) -> Result<String, AdvertiseError> {
    let default_scheme = if tls { "https" } else { "http" };
    let Some(given) = advertise else {
        if bound.ip().is_unspecified() {
            return Err(AdvertiseError::Wildcard { listen: bound });
        }
        return Ok(format!("{default_scheme}://{bound}"));
    };
    let invalid = |why| AdvertiseError::Invalid {
        given: given.to_owned(),
        why,
    };
    let trimmed = given.trim();
    let (scheme, authority) = match trimmed.split_once("://") {
        Some((scheme @ ("http" | "https"), rest)) => (scheme, rest.trim_end_matches('/')),
        Some(_) => return Err(invalid("the scheme must be http or https")),
        None => (default_scheme, trimmed),
    };
    if scheme != default_scheme {
        return Err(AdvertiseError::Scheme {
            given: given.to_owned(),
            why: if tls {
                "the listener speaks TLS (--tls-cert): use https:// or leave the scheme out"
            } else {
                "https:// needs a listener that speaks TLS (--tls-cert and --tls-key)"
            },
        });
    }
    if authority.is_empty() {
        return Err(invalid("it names no host"));
    }
    if authority.contains(['/', '?', '#', '@']) || authority.contains(char::is_whitespace) {
        return Err(invalid(
            "it must be a host and an optional port, without a path or a user",
        ));
    }
    let (host, port) = split_host_port(authority)
        .ok_or_else(|| invalid("the port is not a number from 1 to 65535"))?;
    if let Ok(ip) = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        if ip.is_unspecified() {
            return Err(invalid(
                "it must be an address other hosts can reach, not a wildcard",
            ));
        }
        let port = port.unwrap_or(bound.port());
        return Ok(format!("{scheme}://{}", SocketAddr::new(ip, port)));
    }
    if host.is_empty() || host.starts_with('[') {
        return Err(invalid("it names no host"));
    }
    Ok(format!(
        "{scheme}://{host}:{}",
        port.unwrap_or(bound.port())
    ))
}

/// `url` (an advertised URL, which always names its port) with `port` instead: the address of
/// another listener of the same replica.
pub(crate) fn with_port(url: &str, port: u16) -> String {
    match url.rsplit_once(':') {
        Some((head, _)) => format!("{head}:{port}"),
        None => url.to_owned(),
    }
}

/// `host` and its port, if any: `h:1`, `[v6]:1`, `[v6]`, a bare IPv6 address (no port) or `h`.
/// `None` when a port is there but not a valid one.
fn split_host_port(authority: &str) -> Option<(&str, Option<u16>)> {
    let port_of = |text: &str| text.parse::<u16>().ok().filter(|p| *p != 0);
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after.strip_prefix(':') {
            Some(port) => Some((host, Some(port_of(port)?))),
            None if after.is_empty() => Some((host, None)),
            None => None,
        };
    }
    match authority.rsplit_once(':') {
        // More than one colon and no brackets: a bare IPv6 address.
        Some((host, _)) if host.contains(':') => Some((authority, None)),
        Some((host, port)) => Some((host, Some(port_of(port)?))),
        None => Some((authority, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound(addr: &str) -> SocketAddr {
        addr.parse().unwrap()
    }

    #[test]
    fn advertise_addresses_and_what_they_become_or_why_they_are_refused() {
        let wildcard = bound("0.0.0.0:7420");
        for (given, want) in [
            ("10.1.2.3", Ok("http://10.1.2.3:7420")),
            ("10.1.2.3:9000", Ok("http://10.1.2.3:9000")),
            (" 10.1.2.3 ", Ok("http://10.1.2.3:7420")),
            (
                "chatd-0.chatd.ns.svc",
                Ok("http://chatd-0.chatd.ns.svc:7420"),
            ),
            ("chatd-0.chatd:7000", Ok("http://chatd-0.chatd:7000")),
            ("fd00::5", Ok("http://[fd00::5]:7420")),
            ("[fd00::5]", Ok("http://[fd00::5]:7420")),
            ("[fd00::5]:9000", Ok("http://[fd00::5]:9000")),
            ("http://10.1.2.3:9000/", Ok("http://10.1.2.3:9000")),
            (
                "https://chatd.example.com",
                Err("needs a listener that speaks TLS"),
            ),
            ("", Err("no host")),
            ("http://", Err("no host")),
            ("0.0.0.0", Err("wildcard")),
            ("[::]:7420", Err("wildcard")),
            ("10.1.2.3:0", Err("port")),
            ("10.1.2.3:http", Err("port")),
            ("host:70000", Err("port")),
            ("[fd00::5", Err("port")),
            ("ftp://10.1.2.3", Err("scheme")),
            ("http://10.1.2.3:9000/relay", Err("path")),
            ("http://user@10.1.2.3", Err("user")),
        ] {
            match (advertised_url(Some(given), wildcard, false), want) {
                (Ok(url), Ok(want)) => assert_eq!(url, want, "{given:?}"),
                (Err(err), Err(why)) => {
                    assert!(err.to_string().contains(why), "{given:?}: {err}");
                }
                (got, want) => panic!("{given:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn without_an_advertise_address_a_specific_bind_is_advertised_and_a_wildcard_refused() {
        assert_eq!(
            advertised_url(None, bound("127.0.0.1:7420"), false).as_deref(),
            Ok("http://127.0.0.1:7420")
        );
        assert_eq!(
            advertised_url(None, bound("[::1]:7420"), false).as_deref(),
            Ok("http://[::1]:7420")
        );
        for listen in ["0.0.0.0:7420", "[::]:7420"] {
            let err = advertised_url(None, bound(listen), false)
                .unwrap_err()
                .to_string();
            assert!(err.contains("--advertise-address"), "{err}");
            assert!(err.contains(listen), "{err}");
        }
    }

    #[test]
    fn with_tls_the_scheme_is_https_and_http_is_refused() {
        let wildcard = bound("0.0.0.0:7420");
        for (given, want) in [
            (Some("10.1.2.3"), Ok("https://10.1.2.3:7420")),
            (
                Some("https://chatd.example.com"),
                Ok("https://chatd.example.com:7420"),
            ),
            (Some("chatd-0.chatd:7000"), Ok("https://chatd-0.chatd:7000")),
            (Some("http://10.1.2.3"), Err("the listener speaks TLS")),
        ] {
            match (advertised_url(given, wildcard, true), want) {
                (Ok(url), Ok(want)) => assert_eq!(url, want, "{given:?}"),
                (Err(err), Err(why)) => assert!(err.to_string().contains(why), "{err}"),
                (got, want) => panic!("{given:?}: got {got:?}, want {want:?}"),
            }
        }
        assert_eq!(
            advertised_url(None, bound("127.0.0.1:7420"), true).as_deref(),
            Ok("https://127.0.0.1:7420")
        );
    }

    #[test]
    fn another_listener_of_the_replica_is_the_advertised_host_with_its_port() {
        assert_eq!(
            with_port("https://10.1.2.3:7420", 7421),
            "https://10.1.2.3:7421"
        );
        assert_eq!(
            with_port("http://[fd00::5]:7420", 7421),
            "http://[fd00::5]:7421"
        );
        assert_eq!(
            with_port("http://chatd-0.chatd:7000", 7421),
            "http://chatd-0.chatd:7421"
        );
    }
}
