//! Group lookups from `/etc/group` (enough for `build-users-group`; groups
//! that exist only in other NSS sources are not seen).

/// The gid of a group by name.
pub fn group_gid(name: &str) -> Option<u32> {
    let text = std::fs::read_to_string("/etc/group").ok()?;
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == name).then_some(())?;
        fields.nth(1)?.parse().ok()
    })
}
