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

/// Resolves against the files of a root filesystem.
pub fn resolve_user(spec: &str, rootfs: &Path) -> Result<(u32, u32), UserError> {
    let read = |f: &str| std::fs::read_to_string(rootfs.join(f)).unwrap_or_default();
    resolve_user_in(spec, &read("etc/passwd"), &read("etc/group"))
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
