//! A map holding one value per type: the app's state (`App::with_state`, read by `State<T>`)
//! and its declared views (`App::with_kv_view`, read by `KvView<T>`).

use std::any::{type_name, Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

/// One value per type, shared between clones of the app's context.
#[derive(Clone, Default)]
pub(crate) struct TypeMap {
    values:
        HashMap<TypeId, (&'static str, Arc<dyn Any + Send + Sync>), BuildHasherDefault<IdHasher>>,
}

/// Hashes a `TypeId`, already a hash, by keeping it (as `http`'s `Extensions` do): a `State<T>`
/// argument looks its value up on every call, and SipHash cost more than the rest of it.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        // `TypeId` hashes through `write_u64`; anything else is folded in, not lost.
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 ^= id;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl TypeMap {
    /// Stores `value` as the one of its type, replacing an earlier one.
    pub(crate) fn insert<T: Send + Sync + 'static>(&mut self, value: T) {
        self.values
            .insert(TypeId::of::<T>(), (type_name::<T>(), Arc::new(value)));
    }

    /// Stores a value shared with the caller, who keeps a handle to it.
    pub(crate) fn insert_shared<T: Send + Sync + 'static>(&mut self, value: Arc<T>) {
        self.values
            .insert(TypeId::of::<T>(), (type_name::<T>(), value));
    }

    pub(crate) fn get<T: 'static>(&self) -> Option<&T> {
        self.values
            .get(&TypeId::of::<T>())
            .and_then(|(_, value)| value.downcast_ref::<T>())
    }

    pub(crate) fn contains<T: 'static>(&self) -> bool {
        self.values.contains_key(&TypeId::of::<T>())
    }
}

impl fmt::Debug for TypeMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.values.values().map(|(name, _)| name))
            .finish()
    }
}
