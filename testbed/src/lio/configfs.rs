//! Shell scripts that build and tear down a LIO configuration through
//! configfs, from a resolved [`Plan`]. Pure text: unit-tested here, run
//! by [`super::Lio`] in the guest in one agent call each (one round trip,
//! not one per attribute: TCG makes every process start count).
//!
//! Values are written with `printf %s` (dash's builtin): `echo` would add a
//! newline, which LIO keeps in CHAP credentials (then "CHAP_N values do
//! not match!"). The scripts go to `sh` on its stdin, and values are
//! written by builtins, so no secret is in any process's argv.

use std::fmt::Write as _;
use std::net::SocketAddr;

/// Root of LIO's configfs tree.
pub const TARGET: &str = "/sys/kernel/config/target";

/// Where fileio backing files live in the guest (tmpfs).
pub const BACKING_DIR: &str = "/tmp/lio";

/// Everything to create, with names chosen.
#[derive(Debug, Clone, Default)]
pub(crate) struct Plan {
    pub(crate) stores: Vec<Store>,
    pub(crate) targets: Vec<PlannedTarget>,
    pub(crate) discovery: Option<Credentials>,
}

/// One backstore (a LIO device) in its own HBA directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Store {
    /// `fileio_7`, `rd_mcp_8`.
    pub(crate) hba: String,
    pub(crate) kind: StoreKind,
    /// Where a fileio store's backing file is ([`BACKING_DIR`] unless the
    /// test chose another).
    pub(crate) dir: String,
    pub(crate) size: u64,
    pub(crate) block_size: Option<u32>,
    pub(crate) serial: Option<String>,
    pub(crate) attribs: Vec<(String, String)>,
    /// `(name, id)` of the ALUA port groups made on it.
    pub(crate) alua_groups: Vec<(String, u16)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoreKind {
    /// fileio on a sparse file.
    Fileio,
    /// iblock on a loop device over a sparse file (resizable).
    Loop,
    /// rd_mcp with nullio.
    Null,
}

impl Store {
    /// The device directory.
    pub(crate) fn dir(&self) -> String {
        format!("{TARGET}/core/{}/lu", self.hba)
    }

    /// The backing file (fileio and loop).
    pub(crate) fn file(&self) -> Option<String> {
        (self.kind != StoreKind::Null).then(|| format!("{}/{}.img", self.dir, self.hba))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PlannedTarget {
    pub(crate) iqn: String,
    pub(crate) tpgs: Vec<PlannedTpg>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PlannedTpg {
    pub(crate) tag: u16,
    pub(crate) portals: Vec<SocketAddr>,
    pub(crate) luns: Vec<PlannedLun>,
    pub(crate) acls: Vec<PlannedAcl>,
    pub(crate) auth: Option<Credentials>,
    pub(crate) params: Vec<(String, String)>,
    pub(crate) attribs: Vec<(String, String)>,
    pub(crate) enabled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PlannedLun {
    pub(crate) lun: u32,
    /// Index into [`Plan::stores`].
    pub(crate) store: usize,
    /// `(group name, access state)`.
    pub(crate) alua: Option<(String, u8)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PlannedAcl {
    pub(crate) initiator: String,
    pub(crate) auth: Option<Credentials>,
}

/// CHAP credentials: the initiator's, and the target's for mutual CHAP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Credentials {
    pub(crate) user: String,
    pub(crate) secret: String,
    pub(crate) mutual: Option<(String, String)>,
}

/// Single-quotes `s` for sh.
pub(crate) fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The tpg directory of a target.
pub(crate) fn tpg_dir(iqn: &str, tag: u16) -> String {
    format!("{TARGET}/iscsi/{iqn}/tpgt_{tag}")
}

/// `np/` entry of a portal: `10.240.3.2:3260`, `[::1]:3260`.
pub(crate) fn np_dir(iqn: &str, tag: u16, portal: SocketAddr) -> String {
    format!("{}/np/{portal}", tpg_dir(iqn, tag))
}

const PRELUDE: &str = r#"set -e
w() { printf %s "$2" > "$1" || { echo "lio: cannot write '$2' to $1" >&2; exit 1; }; }
ws() { printf %s "$2" > "$1" || { echo "lio: cannot write a secret to $1" >&2; exit 1; }; }
md() { mkdir -p "$1" || { echo "lio: cannot create $1" >&2; exit 1; }; }
# LIO writes its persistent-reservation (APTPL) and ALUA metadata under its
# dbroot (/etc/target) on every PR registration, APTPL or not, and fails
# the command with LOGICAL UNIT COMMUNICATION FAILURE (08/00) when the
# directory is missing (targetcli's package makes it).
md /etc/target/pr
md /etc/target/alua
"#;

/// `loopdev FILE` prints the loop device backed by FILE (from sysfs, so
/// it works with busybox's `losetup`, which cannot print what it chose).
const LOOPDEV: &str = r#"loopdev() {
  for b in /sys/block/loop*/loop/backing_file; do
    [ -f "$b" ] && [ "$(cat "$b")" = "$1" ] && { b=${b%/loop/backing_file}; echo "/dev/${b##*/}"; return 0; }
  done
  echo "lio: no loop device on $1" >&2; return 1
}
"#;

/// The script that grows or shrinks a loop store's backing file to `size`
/// bytes and has the loop device take the new size (`losetup -c`); iblock
/// answers READ CAPACITY with it from then on.
pub(crate) fn resize_script(store: &Store, size: u64) -> Option<String> {
    let file = quote(&store.file().filter(|_| store.kind == StoreKind::Loop)?);
    Some(format!("set -e\n{LOOPDEV}truncate -s {size} {file}\ndev=$(loopdev {file})\nlosetup -c \"$dev\"\n"))
}

/// The script that creates everything in `plan`.
pub(crate) fn create_script(plan: &Plan) -> String {
    let mut s = format!("{PRELUDE}{LOOPDEV}");
    let mut line = |l: String| {
        s.push_str(&l);
        s.push('\n');
    };
    for st in &plan.stores {
        let dir = st.dir();
        line(format!("md {}", quote(&dir)));
        match st.kind {
            StoreKind::Fileio => {
                let file = st.file().expect("fileio has a file");
                line(format!("mkdir -p {} && rm -f {1} && truncate -s {2} {1}", quote(&st.dir), quote(&file), st.size));
                line(format!(
                    "w {}/control {}",
                    quote(&dir),
                    quote(&format!("fd_dev_name={file},fd_dev_size={}", st.size))
                ));
            }
            StoreKind::Loop => {
                let file = quote(&st.file().expect("a loop store has a file"));
                line(format!("mkdir -p {} && rm -f {file} && truncate -s {} {file}", quote(&st.dir), st.size));
                // busybox's -f takes the next free device, trying the next
                // one when another test's losetup got there first.
                line(format!("losetup -f {file}"));
                line(format!("w {}/control \"udev_path=$(loopdev {file})\"", quote(&dir)));
            }
            StoreKind::Null => {
                let pages = st.size.div_ceil(4096);
                line(format!("w {}/control {}", quote(&dir), quote(&format!("rd_pages={pages},rd_nullio=1"))));
            }
        }
        if let Some(serial) = &st.serial {
            line(format!("w {}/wwn/vpd_unit_serial {}", quote(&dir), quote(serial)));
        }
        line(format!("w {}/enable 1", quote(&dir)));
        if let Some(bs) = st.block_size {
            line(format!("w {}/attrib/block_size {bs}", quote(&dir)));
        }
        for (k, v) in &st.attribs {
            line(format!("w {}/attrib/{k} {}", quote(&dir), quote(v)));
        }
        for (name, id) in &st.alua_groups {
            line(format!("md {}/alua/{name}", quote(&dir)));
            line(format!("w {}/alua/{name}/tg_pt_gp_id {id}", quote(&dir)));
        }
    }
    for t in &plan.targets {
        for tpg in &t.tpgs {
            let dir = tpg_dir(&t.iqn, tpg.tag);
            let q = quote(&dir);
            line(format!("md {q}"));
            for l in &tpg.luns {
                line(format!("md {q}/lun/lun_{}", l.lun));
                line(format!("ln -s {} {q}/lun/lun_{}/lu", quote(&plan.stores[l.store].dir()), l.lun));
                if let Some((group, state)) = &l.alua {
                    let store = quote(&plan.stores[l.store].dir());
                    line(format!("w {q}/lun/lun_{}/alua_tg_pt_gp {}", l.lun, quote(group)));
                    line(format!("w {store}/alua/{group}/alua_access_state {state}"));
                }
            }
            for p in &tpg.portals {
                line(format!("md {}", quote(&np_dir(&t.iqn, tpg.tag, *p))));
            }
            let chap = tpg.auth.is_some() || tpg.acls.iter().any(|a| a.auth.is_some());
            let mut attribs = vec![
                ("generate_node_acls", if tpg.acls.is_empty() { "1" } else { "0" }.to_owned()),
                ("authentication", if chap { "1" } else { "0" }.to_owned()),
                ("demo_mode_write_protect", "0".to_owned()),
            ];
            if tpg.acls.is_empty() {
                // As targetcli sets demo mode up: the generated ACL lives
                // on after its session ends.
                attribs.push(("cache_dynamic_acls", "1".to_owned()));
            }
            for (k, v) in attribs.iter().map(|(k, v)| (k.to_string(), v.clone())).chain(tpg.attribs.clone()) {
                line(format!("w {q}/attrib/{k} {}", quote(&v)));
            }
            for (k, v) in &tpg.params {
                line(format!("w {q}/param/{k} {}", quote(v)));
            }
            if let Some(c) = &tpg.auth {
                credentials(&mut line, &format!("{dir}/auth"), c);
            }
            for acl in &tpg.acls {
                let a = format!("{dir}/acls/{}", acl.initiator);
                line(format!("md {}", quote(&a)));
                for l in &tpg.luns {
                    line(format!("md {}/lun_{}", quote(&a), l.lun));
                    line(format!("ln -s {q}/lun/lun_{0} {1}/lun_{0}/map", l.lun, quote(&a)));
                }
                if let Some(c) = &acl.auth {
                    credentials(&mut line, &format!("{a}/auth"), c);
                }
                // An explicit ACL has its own ErrorRecoveryLevel ceiling.
                if let Some((_, erl)) = tpg.attribs.iter().find(|(k, _)| k == "default_erl") {
                    line(format!("w {}/attrib/default_erl {}", quote(&a), quote(erl)));
                }
            }
            if tpg.enabled {
                line(format!("w {q}/enable 1"));
            }
        }
    }
    if let Some(c) = &plan.discovery {
        let dir = format!("{TARGET}/iscsi/discovery_auth");
        credentials(&mut line, &dir, c);
        line(format!("w {}/enforce_discovery_auth 1", quote(&dir)));
    }
    s
}

fn credentials(line: &mut impl FnMut(String), dir: &str, c: &Credentials) {
    let d = quote(dir);
    line(format!("w {d}/userid {}", quote(&c.user)));
    line(format!("ws {d}/password {}", quote(&c.secret)));
    if let Some((user, secret)) = &c.mutual {
        line(format!("w {d}/userid_mutual {}", quote(user)));
        line(format!("ws {d}/password_mutual {}", quote(secret)));
    }
}

/// The script that removes everything of `plan` (and whatever tests
/// added under its targets: ACLs, LUNs, portals), in the order configfs
/// demands (links, then the directories holding them), then checks that
/// it is gone. Errors on the way do not stop it.
pub(crate) fn teardown_script(plan: &Plan) -> String {
    let mut s = format!("rc=0\n{LOOPDEV}");
    for t in &plan.targets {
        let iqn = quote(&format!("{TARGET}/iscsi/{}", t.iqn));
        let _ = writeln!(
            s,
            "if [ -d {iqn} ]; then\n\
             for tpg in {iqn}/tpgt_*; do printf 0 > \"$tpg/enable\" 2>/dev/null; done\n\
             for tpg in {iqn}/tpgt_*; do\n\
             \x20 for m in \"$tpg\"/acls/*/lun_*; do [ -d \"$m\" ] || continue; for x in \"$m\"/*; do [ -L \"$x\" ] && rm \"$x\"; done; rmdir \"$m\"; done\n\
             \x20 for a in \"$tpg\"/acls/*; do [ -d \"$a\" ] && rmdir \"$a\"; done\n\
             \x20 for l in \"$tpg\"/lun/lun_*; do [ -d \"$l\" ] || continue; for x in \"$l\"/*; do [ -L \"$x\" ] && rm \"$x\"; done; rmdir \"$l\"; done\n\
             \x20 for n in \"$tpg\"/np/*; do [ -d \"$n\" ] && rmdir \"$n\"; done\n\
             \x20 rmdir \"$tpg\"\n\
             done\n\
             rmdir {iqn}\n\
             fi\n\
             [ -d {iqn} ] && {{ echo \"lio: {} is still there\" >&2; rc=1; }}",
            t.iqn
        );
    }
    for st in &plan.stores {
        let dir = quote(&st.dir());
        let hba = quote(&format!("{TARGET}/core/{}", st.hba));
        let _ = writeln!(
            s,
            "if [ -d {dir} ]; then\n\
             for g in {dir}/alua/*; do [ \"${{g##*/}}\" = default_tg_pt_gp ] || rmdir \"$g\"; done\n\
             rmdir {dir}\n\
             fi\n\
             [ -d {hba} ] && rmdir {hba}\n\
             [ -d {hba} ] && {{ echo \"lio: {} is still there\" >&2; rc=1; }}",
            st.hba
        );
        if let Some(file) = st.file() {
            let file = quote(&file);
            if st.kind == StoreKind::Loop {
                let _ = writeln!(s, "dev=$(loopdev {file}) && losetup -d \"$dev\" || rc=1");
            }
            let _ = writeln!(s, "rm -f {file}");
        }
    }
    if plan.discovery.is_some() {
        let _ = writeln!(s, "printf 0 > {TARGET}/iscsi/discovery_auth/enforce_discovery_auth || rc=1");
    }
    s.push_str("exit $rc\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        let store = |hba: &str, kind, serial: Option<&str>| Store {
            hba: hba.into(),
            kind,
            dir: BACKING_DIR.into(),
            size: 1 << 20,
            block_size: Some(4096),
            serial: serial.map(str::to_owned),
            attribs: vec![("emulate_write_cache".into(), "1".into())],
            alua_groups: vec![],
        };
        Plan {
            stores: vec![
                store("fileio_1", StoreKind::Fileio, None),
                store("rd_mcp_2", StoreKind::Null, Some("s'2")),
                store("iblock_3", StoreKind::Loop, None),
            ],
            targets: vec![PlannedTarget {
                iqn: "iqn.x:t".into(),
                tpgs: vec![PlannedTpg {
                    tag: 1,
                    portals: vec!["10.240.1.2:3260".parse().unwrap()],
                    luns: vec![
                        PlannedLun { lun: 0, store: 0, alua: None },
                        PlannedLun { lun: 1, store: 1, alua: None },
                    ],
                    acls: vec![PlannedAcl {
                        initiator: "iqn.x:i".into(),
                        auth: Some(Credentials { user: "u".into(), secret: "s3cret".into(), mutual: None }),
                    }],
                    auth: None,
                    params: vec![("MaxConnections".into(), "4".into())],
                    attribs: vec![],
                    enabled: true,
                }],
            }],
            discovery: None,
        }
    }

    #[test]
    fn creation_writes_with_printf_in_configfs_order() {
        let s = create_script(&plan());
        let at = |needle: &str| s.find(needle).unwrap_or_else(|| panic!("{needle:?} not in\n{s}"));
        // A serial is written before the device is enabled; the block size after.
        assert!(at("rd_mcp_2/lu'/wwn/vpd_unit_serial 's'\\''2'") < at("rd_mcp_2/lu'/enable 1"));
        assert!(at("fileio_1/lu'/enable 1") < at("fileio_1/lu'/attrib/block_size 4096"));
        assert!(s.contains("fd_dev_name=/tmp/lio/fileio_1.img,fd_dev_size=1048576"));
        assert!(s.contains("rd_pages=256,rd_nullio=1"));
        // The loop device is attached before iblock is told its path.
        assert!(
            at("losetup -f '/tmp/lio/iblock_3.img'")
                < at("iblock_3/lu'/control \"udev_path=$(loopdev '/tmp/lio/iblock_3.img')\"")
        );
        assert!(at("loopdev() {") < at("losetup -f"));
        // Explicit ACLs: no demo mode, CHAP enforced, secret written by `ws`.
        assert!(s.contains("attrib/generate_node_acls '0'") && s.contains("attrib/authentication '1'"));
        assert!(s.contains("ws '/sys/kernel/config/target/iscsi/iqn.x:t/tpgt_1/acls/iqn.x:i/auth'/password 's3cret'"));
        assert!(at("np/10.240.1.2:3260") < at("tpgt_1'/enable 1"));
        assert!(!s.contains("echo 's3cret'"), "values are never echoed:\n{s}");
    }

    #[test]
    fn only_a_loop_store_is_resized_by_truncate_then_losetup_c() {
        let plan = plan();
        assert_eq!(resize_script(&plan.stores[0], 1 << 21), None, "fileio keeps its size");
        assert_eq!(resize_script(&plan.stores[1], 1 << 21), None);
        let s = resize_script(&plan.stores[2], 1 << 21).unwrap();
        assert!(
            s.find("truncate -s 2097152 '/tmp/lio/iblock_3.img'").unwrap() < s.find("losetup -c \"$dev\"").unwrap()
        );
    }

    #[test]
    fn teardown_removes_links_before_directories() {
        let s = teardown_script(&plan());
        assert!(s.find("/lun/lun_*").unwrap() < s.find("rmdir \"$tpg\"").unwrap());
        assert!(s.contains("rm -f '/tmp/lio/fileio_1.img'"));
        // The loop device goes after the LIO device that held it.
        let detach = s.find("losetup -d").expect("the loop device is detached");
        assert!(s.find("rmdir '/sys/kernel/config/target/core/iblock_3/lu'").unwrap() < detach);
        assert!(detach < s.find("rm -f '/tmp/lio/iblock_3.img'").unwrap());
        assert!(s.ends_with("exit $rc\n"));
    }
}
