// Small DOM helpers: element building (text always as text, never as HTML), keyed list
// reconciliation, and dialogs.

/**
 * Build an element. `attrs`: `class`, `text`, `html` (trusted constant markup only: icons),
 * `on…` listeners, `dataset`, booleans, and other attributes.
 * @param {string} tag
 * @param {Record<string, any> | null} [attrs]
 * @param {...(Node | string | null | undefined | false | (Node | string | null | undefined | false)[])} children
 * @returns {HTMLElement}
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'text') el.textContent = value;
    else if (key === 'html') el.innerHTML = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (value === true) el.setAttribute(key, '');
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

/**
 * Replace `el`'s children. Unlike the DOM's `replaceChildren`, which shows a `null` as the text
 * "null", it skips what `h` skips.
 * @param {HTMLElement} el
 * @param {...(Node | string | null | undefined | false | (Node | string | null | undefined | false)[])} children
 */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

/** @param {HTMLElement} el @param {any[]} children */
function append(el, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(typeof child === 'string' ? document.createTextNode(child) : child);
  }
}

/**
 * An item of a keyed list: rebuilt only when its signature changes.
 * @typedef {object} Keyed
 * @property {string} key
 * @property {string} sig
 * @property {() => HTMLElement} build
 */

/**
 * Make `container`'s children match `items`, reusing elements whose key and signature match.
 * @param {HTMLElement} container
 * @param {Keyed[]} items
 */
export function reconcile(container, items) {
  /** @type {Map<string, HTMLElement>} */
  const existing = new Map();
  for (const child of /** @type {HTMLElement[]} */ ([...container.children])) {
    if (child.dataset.key) existing.set(child.dataset.key, child);
  }
  const wanted = new Set(items.map((i) => i.key));
  for (const [key, el] of existing) {
    if (!wanted.has(key)) {
      el.remove();
      existing.delete(key);
    }
  }
  /** @type {ChildNode | null} */
  let previous = null;
  for (const item of items) {
    let el = existing.get(item.key);
    if (el && el.dataset.sig !== item.sig) {
      const fresh = item.build();
      fresh.dataset.key = item.key;
      fresh.dataset.sig = item.sig;
      el.replaceWith(fresh);
      el = fresh;
    }
    if (!el) {
      el = item.build();
      el.dataset.key = item.key;
      el.dataset.sig = item.sig;
    }
    const expected = previous ? previous.nextSibling : container.firstChild;
    if (el !== expected) container.insertBefore(el, expected);
    previous = el;
  }
}

/**
 * Open a modal dialog built by `build(close)`; resolves when it closes. Esc closes it.
 * @param {(close: (value?: any) => void) => HTMLElement[]} build
 * @param {{label: string, className?: string}} options
 * @returns {Promise<any>}
 */
export function dialog(build, options) {
  return new Promise((resolve) => {
    const el = /** @type {HTMLDialogElement} */ (h('dialog', { class: `dialog ${options.className ?? ''}`, 'aria-label': options.label }));
    let result;
    const close = (/** @type {any} */ value) => {
      result = value;
      el.close();
    };
    el.append(...build(close));
    el.addEventListener('close', () => {
      el.remove();
      resolve(result);
    });
    // A click on the backdrop (outside the dialog's box) closes it; one on its padding does not.
    el.addEventListener('click', (event) => {
      if (event.target !== el) return;
      const box = el.getBoundingClientRect();
      const inside = event.clientX >= box.left && event.clientX <= box.right && event.clientY >= box.top && event.clientY <= box.bottom;
      if (!inside) close(undefined);
    });
    document.body.append(el);
    el.showModal();
    const first = /** @type {HTMLElement | null} */ (el.querySelector('[autofocus], input, textarea, button.primary'));
    first?.focus();
  });
}

/** Visually hidden text for screen readers. @param {string} text */
export function srOnly(text) {
  return h('span', { class: 'sr-only', text });
}
