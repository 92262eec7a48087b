//! Refusal of private targets at connect time. The rules (which addresses
//! and ports) are `protocol::target`'s, shared with the owners' API; this
//! module applies them to what DNS returns.
//!
//! Two gates, because reqwest never consults the resolver for an IP-literal
//! host: [`GuardedResolver`] filters what DNS returns (and reqwest connects
//! only to what it returns, so a name cannot re-resolve to a private address
//! after the check), and [`TargetPolicy::check_url`] is applied to the URL
//! and to every redirect target.

use std::net::SocketAddr;

pub use protocol::target::{is_forbidden, literal_ip, Refused, TargetPolicy};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// DNS gave no usable answer.
#[derive(Debug, thiserror::Error)]
#[error("dns lookup for {host} failed: {detail}")]
pub struct ResolveFailed {
    pub host: String,
    pub detail: String,
}

/// Resolves with the system resolver, then drops addresses the policy
/// forbids. A name with only forbidden addresses fails with [`Refused`]
/// naming the first of them.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    pub policy: TargetPolicy,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy;
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| ResolveFailed {
                    host: host.clone(),
                    detail: e.to_string(),
                })?
                .collect();
            let (ok, refused): (Vec<_>, Vec<_>) = found
                .into_iter()
                .partition(|a| policy.check(a.ip()).is_ok());
            if ok.is_empty() {
                return Err(match refused.first() {
                    Some(a) => Box::new(Refused::Address(a.ip())) as _,
                    None => Box::new(ResolveFailed {
                        host,
                        detail: "no addresses".into(),
                    }) as _,
                });
            }
            Ok(Box::new(ok.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resolver_refuses_localhost_unless_allowed() {
        let name: Name = "localhost".parse().unwrap();
        let err = GuardedResolver {
            policy: TargetPolicy::PUBLIC_ONLY,
        }
        .resolve(name)
        .await
        .err()
        .expect("localhost must be refused");
        assert!(err.downcast_ref::<Refused>().is_some(), "{err}");
        let name: Name = "localhost".parse().unwrap();
        let addrs: Vec<_> = GuardedResolver {
            policy: TargetPolicy::ANY,
        }
        .resolve(name)
        .await
        .unwrap()
        .collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
    }
}
