//! Resolving a `USER` string (`name|uid[:group|gid]`) against a root filesystem's `/etc/passwd`
//! and `/etc/group`, with the rules runc applies for docker:
//! - a name must exist in passwd; a number need not (it then has gid 0 and home `/`);
//! - without an explicit group the primary gid comes from passwd and the supplementary groups are
//!   every group that lists the user's name as a member;
//! - with an explicit group there are no supplementary groups from `/etc/group`;
//! - the primary gid is always among the supplementary groups too, as docker, BuildKit and
//!   buildah have done since CVE-2022-36109: without it a process could shed its primary group
//!   and slip past a file's deny-by-group permissions.

/// The identity the process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecUser {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub home: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum UserError {
    #[error("unable to find user {0}: no matching entries in passwd file")]
    NoSuchUser(String),
    #[error("unable to find group {0}: no matching entries in group file")]
    NoSuchGroup(String),
    #[error("invalid user specification {0:?}")]
    Invalid(String),
}

/// One line of `/etc/passwd`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

/// One line of `/etc/group`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

/// Malformed lines are skipped, as libc does: a broken entry must not hide the valid ones.
fn parse_passwd(text: &str) -> Vec<PasswdEntry<'_>> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 7 {
                return None;
            }
            Some(PasswdEntry {
                name: f[0],
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5],
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry<'_>> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            Some(GroupEntry {
                name: f[0],
                gid: f[2].parse().ok()?,
                members: f[3]
                    .split(',')
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .collect(),
            })
        })
        .collect()
}

/// The name of `uid` in a passwd text (the caller's own name, to look up subordinate ids).
pub(crate) fn name_of_uid(passwd: &str, uid: u32) -> Option<String> {
    parse_passwd(passwd)
        .into_iter()
        .find(|e| e.uid == uid)
        .map(|e| e.name.to_string())
}

/// Resolves `spec` (empty means root) given the texts of passwd and group (empty when the files
/// do not exist: numeric ids still work then, as with docker).
pub fn resolve(spec: &str, passwd: &str, group: &str) -> Result<ExecUser, UserError> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if group_part == Some("") || (user_part.is_empty() && group_part.is_some()) {
        return Err(UserError::Invalid(spec.to_string()));
    }
    let user_part = if user_part.is_empty() { "0" } else { user_part };

    let users = parse_passwd(passwd);
    let numeric_uid = user_part.parse::<u32>().ok();
    // Docker matches a name first, then a number (so a user literally named "1000" wins).
    let entry = users
        .iter()
        .find(|u| u.name == user_part)
        .or_else(|| numeric_uid.and_then(|uid| users.iter().find(|u| u.uid == uid)));
    let mut exec = match (entry, numeric_uid) {
        (Some(e), _) => ExecUser {
            uid: e.uid,
            gid: e.gid,
            groups: Vec::new(),
            home: if e.home.is_empty() {
                "/".into()
            } else {
                e.home.into()
            },
        },
        (None, Some(uid)) => ExecUser {
            uid,
            gid: 0,
            groups: Vec::new(),
            home: "/".into(),
        },
        (None, None) => return Err(UserError::NoSuchUser(user_part.to_string())),
    };
    let matched_name = entry.map(|e| e.name);

    let groups = parse_group(group);
    match group_part {
        Some(g) => {
            let numeric_gid = g.parse::<u32>().ok();
            exec.gid = match groups.iter().find(|e| e.name == g) {
                Some(e) => e.gid,
                None => match numeric_gid {
                    Some(gid) => gid,
                    None => return Err(UserError::NoSuchGroup(g.to_string())),
                },
            };
        }
        None => {
            if let Some(name) = matched_name {
                for g in &groups {
                    if g.members.contains(&name) && !exec.groups.contains(&g.gid) {
                        exec.groups.push(g.gid);
                    }
                }
            }
        }
    }
    if !exec.groups.contains(&exec.gid) {
        exec.groups.insert(0, exec.gid);
    }
    Ok(exec)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        # a comment\n\
        broken line\n\
        daemon:x:1:1:daemon:/usr/sbin:/bin/false\n\
        app:x:1000:1000:App:/home/app:/bin/sh\n\
        1234:x:4321:4321::/home/numeric:/bin/sh\n\
        nohome:x:1001:1001:::/bin/sh\n";
    const GROUP: &str = "root:x:0:\n\
        daemon:x:1:\n\
        wheel:x:10:root,app\n\
        audio:x:29: app \n\
        app:x:1000:\n\
        staff:x:50:\n";

    #[test]
    fn empty_is_root_with_its_groups() {
        let u = resolve("", PASSWD, GROUP).expect("root");
        assert_eq!((u.uid, u.gid, u.home.as_str()), (0, 0, "/root"));
        assert_eq!(u.groups, vec![0, 10]);
    }

    #[test]
    fn name_gets_primary_and_supplementary_groups() {
        let u = resolve("app", PASSWD, GROUP).expect("app");
        assert_eq!(
            u,
            ExecUser {
                uid: 1000,
                gid: 1000,
                groups: vec![1000, 10, 29],
                home: "/home/app".into()
            }
        );
    }

    #[test]
    fn uid_in_passwd_is_found_by_number() {
        let u = resolve("1000", PASSWD, GROUP).expect("1000");
        assert_eq!((u.uid, u.gid), (1000, 1000));
        assert_eq!(u.groups, vec![1000, 10, 29]);
    }

    #[test]
    fn name_wins_over_number() {
        let u = resolve("1234", PASSWD, GROUP).expect("1234");
        assert_eq!(
            (u.uid, u.gid, u.home.as_str()),
            (4321, 4321, "/home/numeric")
        );
    }

    #[test]
    fn unknown_uid_runs_with_gid_zero_and_slash_home() {
        let u = resolve("4242", PASSWD, GROUP).expect("numeric");
        assert_eq!(
            u,
            ExecUser {
                uid: 4242,
                gid: 0,
                groups: vec![0],
                home: "/".into()
            }
        );
        let u = resolve("4242:77", "", "").expect("no files");
        assert_eq!((u.uid, u.gid), (4242, 77));
    }

    #[test]
    fn explicit_group_by_name_or_number_keeps_only_itself() {
        let u = resolve("app:staff", PASSWD, GROUP).expect("app:staff");
        assert_eq!((u.uid, u.gid), (1000, 50));
        assert_eq!(u.groups, vec![50]);
        let u = resolve("daemon:99", PASSWD, GROUP).expect("daemon:99");
        assert_eq!((u.uid, u.gid), (1, 99));
    }

    #[test]
    fn name_of_uid_finds_the_first_entry() {
        assert_eq!(name_of_uid(PASSWD, 1000).as_deref(), Some("app"));
        assert_eq!(name_of_uid(PASSWD, 9), None);
    }

    #[test]
    fn empty_home_defaults_to_root_dir() {
        let u = resolve("nohome", PASSWD, GROUP).expect("nohome");
        assert_eq!(u.home, "/");
    }

    #[test]
    fn unknown_names_are_errors() {
        assert_eq!(
            resolve("ghost", PASSWD, GROUP),
            Err(UserError::NoSuchUser("ghost".into()))
        );
        assert_eq!(
            resolve("app:ghosts", PASSWD, GROUP),
            Err(UserError::NoSuchGroup("ghosts".into()))
        );
        assert!(matches!(
            resolve("app:", PASSWD, GROUP),
            Err(UserError::Invalid(_))
        ));
        assert!(matches!(
            resolve(":wheel", PASSWD, GROUP),
            Err(UserError::Invalid(_))
        ));
    }
}
