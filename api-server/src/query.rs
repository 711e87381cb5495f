//! Query strings as conda-store's clients send them: repeated keys for lists, and (from the
//! `conda-store` CLI) a stray `/` after the last value, which the router strips beforehand.

use crate::error::{ApiError, ApiResult};

/// The largest page a list returns (conda-store's `max_page_size`).
pub const MAX_PAGE_SIZE: usize = 100;

/// Decoded query parameters, in order.
#[derive(Debug, Clone, Default)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// Parses `a=1&b=x%20y`.
    pub fn parse(query: Option<&str>) -> Params {
        Params(
            url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The last value of `key`, if given and not empty.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, v)| k == key && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    /// Every non-empty value of `key` (comma-separated values split too).
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect()
    }

    /// An integer parameter; a value that is not one is the caller's error.
    pub fn int(&self, key: &str) -> ApiResult<Option<i64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("{key} must be an integer, not {v:?}"))),
        }
    }

    /// A boolean parameter (`true`/`false`, `1`/`0`).
    pub fn bool(&self, key: &str) -> ApiResult<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some("true" | "1" | "True") => Ok(Some(true)),
            Some("false" | "0" | "False") => Ok(Some(false)),
            Some(v) => Err(ApiError::bad_request(format!(
                "{key} must be true or false, not {v:?}"
            ))),
        }
    }
}

/// Page, size and ordering of a list request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paging {
    /// 1-based page.
    pub page: usize,
    /// Items per page.
    pub size: usize,
    /// Fields to sort by, in order.
    pub sort_by: Vec<String>,
    /// Descending when true.
    pub descending: bool,
}

impl Paging {
    /// Reads `page`, `size`, `sort_by` and `order`, refusing values that are out of range.
    /// `allowed` lists the fields a list can be sorted by.
    pub fn from(params: &Params, allowed: &[&str]) -> ApiResult<Paging> {
        let page = params.int("page")?.unwrap_or(1);
        if !(1..=1_000_000).contains(&page) {
            return Err(ApiError::bad_request(format!(
                "page must be between 1 and 1000000, not {page}"
            )));
        }
        let size = params.int("size")?.unwrap_or(MAX_PAGE_SIZE as i64);
        if size < 1 {
            return Err(ApiError::bad_request(format!(
                "size must be at least 1, not {size}"
            )));
        }
        let sort_by: Vec<String> = params
            .all("sort_by")
            .into_iter()
            .map(String::from)
            .collect();
        if let Some(bad) = sort_by.iter().find(|f| !allowed.contains(&f.as_str())) {
            return Err(ApiError::bad_request(format!(
                "cannot sort by {bad:?}; allowed: {}",
                allowed.join(", ")
            )));
        }
        let descending = match params.get("order").map(str::to_ascii_lowercase).as_deref() {
            None | Some("asc") => false,
            Some("desc") => true,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "order must be asc or desc, not {other:?}"
                )));
            }
        };
        Ok(Paging {
            page: page as usize,
            // Larger pages are clamped, as conda-store does.
            size: (size as usize).min(MAX_PAGE_SIZE),
            sort_by,
            descending,
        })
    }

    /// The slice of `items` this page covers.
    pub fn slice<T>(&self, items: Vec<T>) -> Vec<T> {
        let start = (self.page - 1).saturating_mul(self.size);
        items.into_iter().skip(start).take(self.size).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_and_comma_separated_values() {
        let p = Params::parse(Some("packages=numpy&packages=scipy%3E%3D1,pandas&page=2"));
        assert_eq!(p.all("packages"), ["numpy", "scipy>=1", "pandas"]);
        assert_eq!(p.int("page").unwrap(), Some(2));
        assert!(p.int("packages").is_err());
    }

    #[test]
    fn paging_defaults_clamps_and_refuses() {
        let p = Paging::from(&Params::parse(None), &["name"]).unwrap();
        assert_eq!((p.page, p.size, p.descending), (1, 100, false));
        let p = Paging::from(&Params::parse(Some("size=1000&order=DESC")), &["name"]).unwrap();
        assert_eq!((p.size, p.descending), (100, true));
        for bad in ["page=0", "size=-1", "order=up", "sort_by=secret", "page=x"] {
            let e = Paging::from(&Params::parse(Some(bad)), &["name"]).unwrap_err();
            assert_eq!(e.status, 400, "{bad}");
        }
        let p = Paging::from(&Params::parse(Some("page=2&size=2")), &[]).unwrap();
        assert_eq!(p.slice(vec![1, 2, 3, 4, 5]), [3, 4]);
    }
}
