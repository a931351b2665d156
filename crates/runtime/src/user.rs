//! `-u`/`User` resolution against the container's own /etc/passwd and
//! /etc/group, as podman does.

use std::path::Path;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UserError {
    #[error(
        "user {0:?} is not in the image's /etc/passwd (check -u in b2c.run or the image's User)"
    )]
    UnknownUser(String),
    #[error(
        "group {0:?} is not in the image's /etc/group (check -u in b2c.run or the image's User)"
    )]
    UnknownGroup(String),
}

/// Who a container's process runs as, from the image's own files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// The home directory of the user's passwd entry, if it has one.
    pub home: Option<String>,
    /// `--group-add`, resolved.
    pub additional_gids: Vec<u32>,
}

impl ResolvedUser {
    pub fn root() -> ResolvedUser {
        ResolvedUser {
            uid: 0,
            gid: 0,
            home: Some("/root".into()),
            additional_gids: Vec::new(),
        }
    }
}

/// Finds `name` in a passwd/group style file: returns fields 2 and 3.
fn lookup(db: &str, name: &str) -> Option<(u32, Option<u32>)> {
    db.lines().find_map(|line| {
        let mut f = line.split(':');
        if f.next()? != name {
            return None;
        }
        let id = f.nth(1)?.parse().ok()?;
        Some((id, f.next().and_then(|g| g.parse().ok())))
    })
}

/// `""`, `uid`, `name`, `uid:gid`, `name:group` → (uid, gid).
pub fn resolve_user_in(spec: &str, passwd: &str, group: &str) -> Result<(u32, u32), UserError> {
    if spec.is_empty() {
        return Ok((0, 0));
    }
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let (uid, primary) = match user.parse::<u32>() {
        Ok(uid) => (uid, None),
        Err(_) => lookup(passwd, user).ok_or_else(|| UserError::UnknownUser(user.into()))?,
    };
    let gid = match grp {
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                lookup(group, g)
                    .ok_or_else(|| UserError::UnknownGroup(g.into()))?
                    .0
            }
        },
        // A numeric uid without an entry runs with gid 0, like podman.
        None => primary.or_else(|| lookup_by_uid(passwd, uid)).unwrap_or(0),
    };
    Ok((uid, gid))
}

fn lookup_by_uid(passwd: &str, uid: u32) -> Option<u32> {
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.get(2)?.parse::<u32>().ok()? == uid).then(|| f.get(3)?.parse().ok())?
    })
}

/// The home directory of `uid` in a passwd file.
fn home_of(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.get(2)?.parse::<u32>().ok()? == uid)
            .then(|| f.get(5).map(|h| h.to_string()))
            .flatten()
            .filter(|h| !h.is_empty())
    })
}

/// The user, its home (podman's `HOME`) and its `--group-add` groups.
pub fn resolve_full(
    spec: &str,
    groups: &[String],
    passwd: &str,
    group: &str,
) -> Result<ResolvedUser, UserError> {
    let (uid, gid) = resolve_user_in(spec, passwd, group)?;
    let additional_gids = groups
        .iter()
        .map(|g| match g.parse::<u32>() {
            Ok(gid) => Ok(gid),
            Err(_) => lookup(group, g)
                .map(|(gid, _)| gid)
                .ok_or_else(|| UserError::UnknownGroup(g.clone())),
        })
        .collect::<Result<_, _>>()?;
    // podman: the passwd entry's home, else / (root's is /root by default).
    let home = home_of(passwd, uid).or_else(|| (uid == 0).then(|| "/root".to_string()));
    Ok(ResolvedUser {
        uid,
        gid,
        home,
        additional_gids,
    })
}

/// Resolves against the files of a root filesystem.
pub fn resolve_user(
    spec: &str,
    groups: &[String],
    rootfs: &Path,
) -> Result<ResolvedUser, UserError> {
    let read = |f: &str| std::fs::read_to_string(rootfs.join(f)).unwrap_or_default();
    resolve_full(spec, groups, &read("etc/passwd"), &read("etc/group"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nmesa:x:1000:1001::/home/mesa:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nvideo:x:44:mesa\n";

    #[test]
    fn resolves_names_and_numbers() {
        assert_eq!(resolve_user_in("", PASSWD, GROUP), Ok((0, 0)));
        assert_eq!(resolve_user_in("mesa", PASSWD, GROUP), Ok((1000, 1001)));
        assert_eq!(resolve_user_in("1000", PASSWD, GROUP), Ok((1000, 1001)));
        assert_eq!(resolve_user_in("4242", PASSWD, GROUP), Ok((4242, 0)));
        assert_eq!(resolve_user_in("mesa:video", PASSWD, GROUP), Ok((1000, 44)));
        assert_eq!(resolve_user_in("5:7", "", ""), Ok((5, 7)));
    }

    #[test]
    fn home_and_supplementary_groups() {
        let u = resolve_full("mesa", &["video".into(), "7".into()], PASSWD, GROUP).unwrap();
        assert_eq!(
            u,
            ResolvedUser {
                uid: 1000,
                gid: 1001,
                home: Some("/home/mesa".into()),
                additional_gids: vec![44, 7],
            }
        );
        assert_eq!(
            resolve_full("", &[], PASSWD, GROUP)
                .unwrap()
                .home
                .as_deref(),
            Some("/root")
        );
        assert_eq!(
            resolve_full("", &[], "", "").unwrap().home.as_deref(),
            Some("/root")
        );
        assert_eq!(resolve_full("4242", &[], PASSWD, GROUP).unwrap().home, None);
        assert_eq!(
            resolve_full("", &["render".into()], PASSWD, GROUP),
            Err(UserError::UnknownGroup("render".into()))
        );
    }

    #[test]
    fn unknown_names_are_errors() {
        assert_eq!(
            resolve_user_in("nobody", PASSWD, GROUP),
            Err(UserError::UnknownUser("nobody".into()))
        );
        assert_eq!(
            resolve_user_in("mesa:render", PASSWD, GROUP),
            Err(UserError::UnknownGroup("render".into()))
        );
    }
}
