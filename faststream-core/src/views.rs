//! The live views an app declares with `App::with_kv_view`, one per value type, as handlers and
//! hooks take them (`KvView<T>` arguments). Declared before start-up, so that an argument asking
//! for a view nobody declared is found before connecting; filled once connected, before any
//! watch starts, so every handler call finds its view caught up.

use std::any::{type_name, Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

use crate::kv::view::KvView;

/// A declared view's place, filled at start-up.
type Slot<T> = OnceLock<KvView<T>>;

/// The declared views, by value type.
#[derive(Default)]
pub(crate) struct ViewSlots {
    slots: HashMap<TypeId, (&'static str, Arc<dyn Any + Send + Sync>)>,
}

impl ViewSlots {
    /// Declares the view of `T`; `None` if one is declared already.
    pub(crate) fn declare<T: Send + Sync + 'static>(&mut self) -> Option<Arc<Slot<T>>> {
        if self.slots.contains_key(&TypeId::of::<T>()) {
            return None;
        }
        let slot: Arc<Slot<T>> = Arc::new(OnceLock::new());
        let shared: Arc<dyn Any + Send + Sync> = slot.clone();
        self.slots
            .insert(TypeId::of::<T>(), (type_name::<T>(), shared));
        Some(slot)
    }

    /// Whether a view of `T` is declared.
    pub(crate) fn declared<T: 'static>(&self) -> bool {
        self.slots.contains_key(&TypeId::of::<T>())
    }

    /// The view of `T`, once started.
    pub(crate) fn get<T: Send + Sync + 'static>(&self) -> Option<&KvView<T>> {
        self.slots
            .get(&TypeId::of::<T>())
            .and_then(|(_, slot)| slot.downcast_ref::<Slot<T>>())
            .and_then(OnceLock::get)
    }
}

impl fmt::Debug for ViewSlots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.slots.values().map(|(name, _)| name))
            .finish()
    }
}
