//! How the drill container reaches the repository without a network interface.
//!
//! A posix repository is mounted read-only. An S3 repository is reached through one Incus proxy
//! device: it listens on the container's loopback at the repository's port and connects, from
//! this host, to the address this host resolves the repository's name to. The container's
//! `/etc/hosts` gives that name `127.0.0.1`, so pgBackRest connects to the name it signs and
//! verifies the certificate for, and the container can open no other connection: the bucket is
//! all it reaches. The CA file or directory of the configuration is mounted read-only at its path.

use pgbackrest::conf::Conf;
use std::net::{SocketAddr, ToSocketAddrs as _};

/// pgBackRest's default `repo1-storage-port`.
const DEFAULT_PORT: u16 = 443;

/// What the container needs to reach an S3 repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Route {
    /// The host name pgBackRest connects to (the container maps it to its loopback).
    pub name: String,
    /// The port it connects to.
    pub port: u16,
    /// CA files and directories of the configuration, to mount read-only at their paths.
    pub ca_paths: Vec<String>,
}

impl S3Route {
    /// The route of the configuration's `repo1` (the option names of 2.45 and their older
    /// `repo1-s3-*` names).
    pub fn of(conf: &Conf) -> Result<S3Route, String> {
        let endpoint = conf
            .get("repo1-s3-endpoint")
            .ok_or("repo1-s3-endpoint is not set in the configuration")?;
        let host_style = conf.get("repo1-s3-uri-style").unwrap_or("host") == "host";
        let name = match conf.get_any(&["repo1-storage-host", "repo1-s3-host"]) {
            Some(host) => host.to_owned(),
            None if host_style => {
                let bucket = conf
                    .get("repo1-s3-bucket")
                    .ok_or("repo1-s3-bucket is not set in the configuration")?;
                format!("{bucket}.{endpoint}")
            }
            None => endpoint.to_owned(),
        };
        if !is_host_name(&name) {
            return Err(format!(
                "the repository host '{name}' is not a host name (letters, digits, '-', '.')"
            ));
        }
        let port = match conf.get_any(&["repo1-storage-port", "repo1-s3-port"]) {
            None => DEFAULT_PORT,
            Some(p) => p
                .parse()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("repo1-storage-port '{p}' is not a port"))?,
        };
        let verify = conf.get_any(&["repo1-storage-verify-tls", "repo1-s3-verify-tls"]);
        let ca_paths = if verify == Some("n") {
            Vec::new()
        } else {
            [
                ["repo1-storage-ca-file", "repo1-s3-ca-file"],
                ["repo1-storage-ca-path", "repo1-s3-ca-path"],
            ]
            .iter()
            .filter_map(|keys| conf.get_any(keys).map(str::to_owned))
            .collect()
        };
        Ok(S3Route {
            name,
            port,
            ca_paths,
        })
    }

    /// The address this host reaches the repository at (IPv4 first).
    pub fn resolve(&self) -> Result<SocketAddr, String> {
        let addrs: Vec<SocketAddr> = (self.name.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| format!("resolving the repository host '{}': {e}", self.name))?
            .collect();
        addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or(addrs.first())
            .copied()
            .ok_or_else(|| format!("the repository host '{}' has no address", self.name))
    }

    /// The Incus proxy device's `listen=` and `connect=` settings.
    pub fn proxy(&self, to: SocketAddr) -> [String; 2] {
        [
            format!("listen=tcp:127.0.0.1:{}", self.port),
            format!("connect=tcp:{to}"),
        ]
    }

    /// The container's `/etc/hosts`: loopback, and the repository's name on it.
    pub fn hosts_file(&self) -> String {
        format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.0.1\t{}\n",
            self.name
        )
    }
}

/// A DNS host name: labels of letters, digits and inner hyphens, at most 253 characters.
fn is_host_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(text: &str) -> Conf {
        let mut c = Conf::default();
        pgbackrest::conf::parse(text, "main", &mut c);
        c
    }

    #[test]
    fn path_style_connects_to_the_endpoint_at_its_port_with_the_ca_mounted() {
        let c = conf(
            "[global]\nrepo1-type=s3\nrepo1-s3-endpoint=vz-lab-s3\nrepo1-s3-uri-style=path\n\
             repo1-storage-port=9443\nrepo1-storage-ca-file=/etc/veza-lab/ca.crt\n\
             repo1-s3-bucket=b\n",
        );
        let r = S3Route::of(&c).unwrap();
        assert_eq!(
            r,
            S3Route {
                name: "vz-lab-s3".into(),
                port: 9443,
                ca_paths: vec!["/etc/veza-lab/ca.crt".into()],
            }
        );
        let to: SocketAddr = "198.18.0.1:9443".parse().unwrap();
        assert_eq!(
            r.proxy(to),
            ["listen=tcp:127.0.0.1:9443", "connect=tcp:198.18.0.1:9443"]
        );
        assert!(r.hosts_file().ends_with("127.0.0.1\tvz-lab-s3\n"));
    }

    #[test]
    fn host_style_is_the_default_and_storage_host_wins_and_old_names_count() {
        let c = conf("[global]\nrepo1-s3-endpoint=s3.example\nrepo1-s3-bucket=bk\n");
        let r = S3Route::of(&c).unwrap();
        assert_eq!((r.name.as_str(), r.port), ("bk.s3.example", 443));
        let c = conf(
            "[global]\nrepo1-s3-endpoint=s3.example\nrepo1-s3-host=minio.lan\n\
             repo1-s3-port=9000\nrepo1-s3-ca-path=/etc/ssl/lab\n",
        );
        let r = S3Route::of(&c).unwrap();
        assert_eq!((r.name.as_str(), r.port), ("minio.lan", 9000));
        assert_eq!(r.ca_paths, ["/etc/ssl/lab"]);
    }

    #[test]
    fn no_ca_mount_without_verification_and_bad_values_are_refused() {
        let c = conf(
            "[global]\nrepo1-s3-endpoint=e\nrepo1-s3-uri-style=path\n\
             repo1-storage-verify-tls=n\nrepo1-storage-ca-file=/ca\n",
        );
        assert!(S3Route::of(&c).unwrap().ca_paths.is_empty());
        for bad in [
            "[global]\nrepo1-s3-uri-style=path\n",
            "[global]\nrepo1-s3-endpoint=e\n",
            "[global]\nrepo1-s3-endpoint=e;x\nrepo1-s3-uri-style=path\n",
            "[global]\nrepo1-s3-endpoint=-e\nrepo1-s3-uri-style=path\n",
            "[global]\nrepo1-s3-endpoint=e\nrepo1-s3-uri-style=path\nrepo1-storage-port=0\n",
            "[global]\nrepo1-s3-endpoint=e\nrepo1-s3-uri-style=path\nrepo1-storage-port=x\n",
        ] {
            assert!(S3Route::of(&conf(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn loopback_names_resolve() {
        let r = S3Route {
            name: "localhost".into(),
            port: 9443,
            ca_paths: vec![],
        };
        assert_eq!(r.resolve().unwrap().port(), 9443);
        assert!(r.resolve().unwrap().ip().is_loopback());
    }
}
