// A few DOM helpers: h() builds an element, clear() empties one.

export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  // `value` last: a range input clamps it to the min, max and step it has at that moment.
  const { value: initial, ...rest } = attrs;
  for (const [name, value] of Object.entries({ ...rest, value: initial })) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") element.className = value;
    else if (name === "dataset") Object.assign(element.dataset, value);
    else if (name === "style") Object.assign(element.style, value);
    else if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? "" : value);
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
}

export function clear(element, ...children) {
  element.replaceChildren();
  append(element, children);
  return element;
}

export function formatMs(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  return value < 10 ? value.toFixed(2) : value < 100 ? value.toFixed(1) : value.toFixed(0);
}

export function percent(value) {
  return `${(100 * value).toFixed(value >= 0.1 ? 1 : 2)} %`;
}
