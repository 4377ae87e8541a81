// A minimal event emitter that works the same in browsers and Node: `on` returns its own `off`, an event with no
// listener is dropped (an "error" too), and a throwing listener cannot corrupt the document's state mid-update
// (its exception is rethrown on its own task).

export class Emitter {
  #listeners = new Map();

  /** @returns {() => void} removes the listener */
  on(event, listener) {
    if (typeof listener !== 'function') throw new TypeError('listener must be a function');
    let set = this.#listeners.get(event);
    if (!set) this.#listeners.set(event, (set = new Set()));
    const entry = (value) => listener(value);
    set.add(entry);
    return () => set.delete(entry);
  }

  emit(event, value) {
    const set = this.#listeners.get(event);
    if (!set) return;
    for (const listener of [...set]) {
      try {
        listener(value);
      } catch (err) {
        setTimeout(() => { throw err; }, 0);
      }
    }
  }
}
