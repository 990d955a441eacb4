//! `[limits]`: token-bucket rate limits at the HTTP edge (see `http::limits`).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `[limits]`: how fast one client may call. Each request takes a token from its bucket;
/// a bucket refills at `*_per_second` up to `*_burst` tokens, and a request that finds it
/// empty is refused with 429 and `Retry-After`. Requests with a customer's API key draw on
/// their account's bucket; requests without a valid API key (opening an account,
/// anonymous search, refused credentials) draw on their client address's bucket. The
/// operator token is never limited, nor are the cheap probes (`/health`, `/metrics`,
/// `/v1/openapi.json`, the console's static files) unless they refuse the credential sent.
/// Opening an account also draws on a slow bucket of its own per address.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Master switch. On by default; `WAYFARE__LIMITS__ENABLED=false` turns every limit
    /// off, for benchmarks that drive one key or one address far past a customer's rate.
    pub enabled: bool,
    /// Sustained requests a second per account (whichever of its keys is used).
    pub per_key_per_second: f64,
    /// Requests one account may send at once, before the sustained rate applies.
    pub per_key_burst: u32,
    /// Sustained requests a second per client address, for requests without a valid API
    /// key. The address is the TCP peer's (IPv6 by /64 network), or, when the peer is one
    /// of `trusted_proxies`, the address that proxy forwarded for.
    pub per_address_per_second: f64,
    /// Requests one address may send at once, before the sustained rate applies.
    pub per_address_burst: u32,
    /// Accounts one address may open a second, sustained (fractions allowed: 0.005 is one
    /// every 200 s). Each account has its own request bucket, so this bounds how far a
    /// client can multiply its budget by opening accounts.
    pub account_creations_per_second: f64,
    /// Accounts one address may open at once, before the sustained rate applies.
    pub account_creations_burst: u32,
    /// Most accounts and most addresses tracked at once (each table apart). Past it, full
    /// buckets are forgotten first, then the least recently used ones; never all at once,
    /// so memory stays bounded and a busy client's bucket is never reset by others.
    pub max_tracked: usize,
    /// Reverse proxies (load balancers) whose `X-Forwarded-For` is believed: addresses or
    /// networks (`"127.0.0.1"`, `"10.0.0.0/8"`, `"::1"`). A request from one of them draws
    /// on the bucket of the nearest address in its `X-Forwarded-For` that is not itself a
    /// trusted proxy; from anyone else the header is ignored (a client could write any
    /// address there). Empty by default: behind a proxy, every client then shares its
    /// bucket.
    pub trusted_proxies: Vec<String>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            enabled: true,
            per_key_per_second: 20.0,
            per_key_burst: 100,
            per_address_per_second: 10.0,
            per_address_burst: 50,
            account_creations_per_second: 0.005,
            account_creations_burst: 3,
            max_tracked: 100_000,
            trusted_proxies: Vec::new(),
        }
    }
}

/// Slowest refill accepted: one token every 1,000 seconds.
const MIN_PER_SECOND: f64 = 0.001;
/// Fastest refill accepted.
const MAX_PER_SECOND: f64 = 1_000_000.0;
/// Largest burst accepted.
const MAX_BURST: u32 = 1_000_000;
/// Largest table accepted.
const MAX_TRACKED: usize = 10_000_000;

impl LimitsConfig {
    /// Range checks, naming the key. Checked whether or not `enabled` is set, so turning
    /// the limits back on cannot meet a bad value left behind.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &'static str, reason: String| Err(ConfigError::Invalid { key, reason });
        for (key, rate) in [
            ("limits.per_key_per_second", self.per_key_per_second),
            ("limits.per_address_per_second", self.per_address_per_second),
            (
                "limits.account_creations_per_second",
                self.account_creations_per_second,
            ),
        ] {
            // `contains` is false for NaN too.
            if !(MIN_PER_SECOND..=MAX_PER_SECOND).contains(&rate) {
                return bad(
                    key,
                    format!("must be between {MIN_PER_SECOND} and {MAX_PER_SECOND}"),
                );
            }
        }
        for (key, burst) in [
            ("limits.per_key_burst", self.per_key_burst),
            ("limits.per_address_burst", self.per_address_burst),
            (
                "limits.account_creations_burst",
                self.account_creations_burst,
            ),
        ] {
            if !(1..=MAX_BURST).contains(&burst) {
                return bad(key, format!("must be between 1 and {MAX_BURST}"));
            }
        }
        if !(1..=MAX_TRACKED).contains(&self.max_tracked) {
            return bad(
                "limits.max_tracked",
                format!("must be between 1 and {MAX_TRACKED}"),
            );
        }
        self.trusted_networks()?;
        Ok(())
    }

    /// `trusted_proxies`, parsed; an entry that is not an address or network is refused,
    /// naming it.
    pub fn trusted_networks(&self) -> Result<Vec<Network>, ConfigError> {
        self.trusted_proxies
            .iter()
            .map(|entry| {
                entry
                    .parse::<Network>()
                    .map_err(|reason| ConfigError::Invalid {
                        key: "limits.trusted_proxies",
                        reason: format!("{entry:?} {reason}"),
                    })
            })
            .collect()
    }
}

/// An IP network: an address and how many leading bits of it count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    /// Whether `ip` is in this network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let bits = |n: u8, width: u8| -> u128 {
            if n == 0 {
                0
            } else {
                (!0u128 << (width - n)) & (!0u128 >> (128 - width))
            }
        };
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = bits(self.prefix, 32);
                u128::from(u32::from(net)) & mask == u128::from(u32::from(ip)) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = bits(self.prefix, 128);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for Network {
    type Err = String;

    /// `"10.0.0.1"` (one address) or `"10.0.0.0/8"`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse::<IpAddr>()
            .map_err(|_| "is not an IP address or network (e.g. \"10.0.0.0/8\")".to_owned())?
            .to_canonical();
        let width = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(p) => match p.trim().parse::<u8>() {
                Ok(p) if p <= width => p,
                _ => {
                    return Err(format!(
                        "has a prefix length that is not between 0 and {width}"
                    ))
                }
            },
        };
        Ok(Network { addr, prefix })
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::Network;

    #[test]
    fn networks_hold_their_addresses_and_no_others() {
        let n = |s: &str| s.parse::<Network>().unwrap();
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert!(n("10.0.0.0/8").contains(ip("10.200.3.4")));
        assert!(!n("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(n("127.0.0.1").contains(ip("127.0.0.1")));
        assert!(!n("127.0.0.1").contains(ip("127.0.0.2")));
        assert!(
            n("127.0.0.1").contains(ip("::ffff:127.0.0.1")),
            "IPv4-mapped"
        );
        assert!(n("0.0.0.0/0").contains(ip("203.0.113.9")));
        assert!(!n("0.0.0.0/0").contains(ip("2001:db8::1")));
        assert!(n("2001:db8::/32").contains(ip("2001:db8:ffff::1")));
        assert!(!n("2001:db8::/32").contains(ip("2001:db9::1")));
        assert!(n("::1").contains(ip("::1")));
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "localhost",
            "10.0.0.0/x",
            "10.0.0/8",
        ] {
            assert!(bad.parse::<Network>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_bad_trusted_proxy_is_refused_naming_it() {
        let e = Config::parse(
            "[limits]\ntrusted_proxies = [\"10.0.0.0/8\", \"proxy.local\"]\n",
            vec![],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("limits.trusted_proxies") && e.contains("proxy.local"),
            "{e}"
        );
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn limits_are_on_by_default_and_the_environment_turns_them_off() {
        let c = Config::parse("", env(&[])).unwrap();
        assert!(c.limits.enabled);
        assert!(c.limits.per_key_burst >= 1 && c.limits.per_address_burst >= 1);
        let c = Config::parse("", env(&[("WAYFARE__LIMITS__ENABLED", "false")])).unwrap();
        assert!(!c.limits.enabled);
        let c = Config::parse(
            "[limits]\nper_address_per_second = 0.5\nper_address_burst = 3\n",
            env(&[]),
        )
        .unwrap();
        assert_eq!(c.limits.per_address_per_second, 0.5);
        assert_eq!(c.limits.per_address_burst, 3);
    }

    #[test]
    fn bad_limits_are_refused_naming_the_key() {
        for (text, key) in [
            ("per_key_per_second = 0", "limits.per_key_per_second"),
            ("per_key_per_second = -1.0", "limits.per_key_per_second"),
            ("per_key_per_second = nan", "limits.per_key_per_second"),
            ("per_key_per_second = inf", "limits.per_key_per_second"),
            (
                "per_address_per_second = 0.0",
                "limits.per_address_per_second",
            ),
            (
                "per_address_per_second = 2000000",
                "limits.per_address_per_second",
            ),
            ("per_key_burst = 0", "limits.per_key_burst"),
            ("per_address_burst = 0", "limits.per_address_burst"),
            ("per_address_burst = 1000001", "limits.per_address_burst"),
            ("per_key_burst = -1", "per_key_burst"),
            ("max_tracked = 0", "limits.max_tracked"),
            ("per_second = 5", "per_second"),
        ] {
            // Refused even while the limits are off, so turning them on cannot fail later.
            let e = Config::parse(&format!("[limits]\nenabled = false\n{text}\n"), env(&[]))
                .unwrap_err();
            assert!(e.to_string().contains(key), "{text}: {e}");
        }
        let e = Config::parse("", env(&[("WAYFARE__LIMITS__PER_KEY_BURST", "0")])).unwrap_err();
        assert!(e.to_string().contains("limits.per_key_burst"), "{e}");
        assert!(
            e.to_string().contains("WAYFARE__LIMITS__PER_KEY_BURST"),
            "{e}"
        );
    }
}
