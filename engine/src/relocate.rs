//! Prefix replacement in file contents, as conda does it on install and conda-pack on unpack:
//! text files get every occurrence replaced (any length); binary files get each C string that
//! holds the prefix rewritten and NUL-padded to its old length, so offsets do not move.

/// The first occurrence of `needle` (not empty) in `hay` at or after `from`.
pub(crate) fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let last = hay.len().checked_sub(needle.len())?;
    let mut i = from;
    while i <= last {
        let at = i + hay[i..=last].iter().position(|&b| b == needle[0])?;
        if hay[at..].starts_with(needle) {
            return Some(at);
        }
        i = at + 1;
    }
    None
}

/// Every occurrence of `old` replaced by `new`, or `None` when there is none.
pub(crate) fn replace_text(data: &[u8], old: &[u8], new: &[u8]) -> Option<Vec<u8>> {
    let mut at = find(data, old, 0)?;
    let mut out = Vec::with_capacity(data.len());
    let mut done = 0;
    loop {
        out.extend_from_slice(&data[done..at]);
        out.extend_from_slice(new);
        done = at + old.len();
        match find(data, old, done) {
            Some(next) => at = next,
            None => break,
        }
    }
    out.extend_from_slice(&data[done..]);
    Some(out)
}

/// The first C string (`old`, then anything but NUL, then NUL) starting at or after `from`:
/// its start and the index of its NUL. As in conda, an occurrence with no NUL after it is not
/// one, and neither is any later occurrence then.
pub(crate) fn find_c_string(data: &[u8], old: &[u8], from: usize) -> Option<(usize, usize)> {
    let start = find(data, old, from)?;
    let nul = start + data[start..].iter().position(|&b| b == 0)?;
    Some((start, nul))
}

/// conda's binary replacement (`binary_replace`): each C string holding `old` gets all its
/// occurrences replaced and is padded with NULs after its terminator to its old length.
/// `None` when nothing matched. Callers check that `new` is not longer when something matches.
pub(crate) fn replace_binary(data: &[u8], old: &[u8], new: &[u8]) -> Option<Vec<u8>> {
    let (mut start, mut nul) = find_c_string(data, old, 0)?;
    let mut out = Vec::with_capacity(data.len());
    let mut done = 0;
    loop {
        out.extend_from_slice(&data[done..start]);
        let string = &data[start..nul];
        let before = out.len();
        match replace_text(string, old, new) {
            Some(replaced) => out.extend_from_slice(&replaced),
            None => out.extend_from_slice(string),
        }
        // The terminator, then padding up to the string's old length.
        out.resize(before + string.len().max(out.len() - before) + 1, 0);
        done = nul + 1;
        match find_c_string(data, old, done) {
            Some(next) => (start, nul) = next,
            None => break,
        }
    }
    out.extend_from_slice(&data[done..]);
    Some(out)
}

/// conda's fix for a script whose shebang the new prefix broke: the kernel reads at most 127
/// bytes of `#!` line and splits it at the first space, so a relocated interpreter path with a
/// space, or a line too long, becomes `#!/usr/bin/env <program> <arguments>` (found on PATH
/// once the environment is activated). Other data is returned as it is.
pub(crate) fn fix_shebang(data: Vec<u8>, new: &[u8]) -> Vec<u8> {
    if !data.starts_with(b"#!") {
        return data;
    }
    let end = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let line = &data[2..end];
    if !line.starts_with(new) || (!new.contains(&b' ') && end <= 127) {
        return data;
    }
    let rest = &line[new.len()..];
    let exe_len = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
    let (exe, args) = rest.split_at(exe_len);
    let program = exe.rsplit(|&b| b == b'/').next().unwrap_or(exe);
    let mut out = b"#!/usr/bin/env ".to_vec();
    out.extend_from_slice(program);
    out.extend_from_slice(args);
    out.extend_from_slice(&data[end..]);
    out
}

#[cfg(test)]
mod tests {
    use super::fix_shebang;

    #[test]
    fn a_shebang_with_a_space_uses_env() {
        let new = b"/a b/env";
        let fixed = fix_shebang(b"#!/a b/env/bin/python3.11 -E\nimport x\n".to_vec(), new);
        assert_eq!(fixed, b"#!/usr/bin/env python3.11 -E\nimport x\n");
        let plain = b"#!/ab/env/bin/python\n".to_vec();
        assert_eq!(fix_shebang(plain.clone(), b"/ab/env"), plain);
        let long = format!("/{}", "x".repeat(130));
        let script = format!("#!{long}/bin/python\nprint(1)\n").into_bytes();
        assert_eq!(
            fix_shebang(script, long.as_bytes()),
            b"#!/usr/bin/env python\nprint(1)\n"
        );
        let not_a_script = b"data /a b/env".to_vec();
        assert_eq!(fix_shebang(not_a_script.clone(), new), not_a_script);
    }
}
