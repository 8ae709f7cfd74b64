/* groundup web chat: safe Markdown for model output.
 *
 * Model text is untrusted. renderMarkdown() first escapes ALL of it (& < > " '), so no tag,
 * attribute or entity from the model survives as markup; only then does it turn a small Markdown
 * subset into tags this file writes itself: paragraphs, headings, **bold**, *italic*, `code`,
 * fenced code blocks, bullet/numbered lists, horizontal rules, and [links](https://...) with an
 * http(s) URL only (target=_blank, rel="noopener noreferrer"). There are no images: ![x](y) stays
 * text. Inline code and links are parked in numbered NUL-delimited slots while the emphasis rules
 * run, so `**` inside code is left alone; NULs are stripped from the input first, so the model
 * cannot forge a slot.
 */
"use strict";

(function () {
  const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

  function escapeHtml(text) {
    return String(text).replace(/[&<>"']/g, (c) => ESCAPES[c]);
  }

  // Inline rules on one already-escaped line (or run of lines joined by "\n").
  function inline(escaped) {
    const slots = [];
    const park = (html) => "\u0000" + (slots.push(html) - 1) + "\u0000";
    let s = escaped.replace(/`([^`\n]+)`/g, (_, code) => park("<code>" + code + "</code>"));
    // [text](http(s)://url) but not ![text](url). The URL is escaped text: it holds no raw quote,
    // < or >, so it cannot leave the href attribute; the scheme check keeps javascript: etc. out.
    s = s.replace(/(?<!!)\[([^\]\n]+)\]\((https?:\/\/[^\s()]+)\)/g, (_, label, url) =>
      park('<a href="' + url + '" target="_blank" rel="noopener noreferrer">' + label + "</a>"));
    s = s.replace(/\*\*(?=\S)([^\n]*?\S)\*\*/g, "<strong>$1</strong>");
    s = s.replace(/(^|[^\w])__(?=\S)([^\n]*?\S)__(?!\w)/g, "$1<strong>$2</strong>");
    s = s.replace(/(^|[^*\w])\*([^\s*](?:[^*\n]*?[^\s*])?)\*(?![*\w])/g, "$1<em>$2</em>");
    s = s.replace(/(^|[^\w])_([^\s_](?:[^_\n]*?[^\s_])?)_(?!\w)/g, "$1<em>$2</em>");
    s = s.replace(/\n/g, "<br>");
    // Restore parked pieces (a link label may itself hold parked code, hence the loop).
    for (let i = 0; i < 3 && s.indexOf("\u0000") >= 0; i++) {
      s = s.replace(/\u0000(\d+)\u0000/g, (_, n) => slots[Number(n)]);
    }
    return s;
  }

  const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([\w+#.-]*)\s*$/;
  const HEADING = /^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
  const BULLET = /^(\s*)[-*+]\s+(.*)$/;
  const ORDERED = /^(\s*)(\d{1,9})[.)]\s+(.*)$/;
  const RULE = /^ {0,3}([-*_])(\s*\1){2,}\s*$/;

  function listItem(line) {
    let m = BULLET.exec(line);
    if (m) return { ordered: false, text: m[2], start: 1 };
    m = ORDERED.exec(line);
    if (m) return { ordered: true, text: m[3], start: Number(m[2]) };
    return null;
  }

  function isBlockStart(line) {
    return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || listItem(line) !== null;
  }

  // Markdown subset -> HTML string in which every character of `source` appears escaped.
  function renderMarkdown(source) {
    const text = escapeHtml(String(source).replace(/\u0000/g, "").replace(/\r\n?/g, "\n"));
    const lines = text.split("\n");
    const out = [];
    let i = 0;
    while (i < lines.length) {
      const line = lines[i];
      if (line.trim() === "") { i++; continue; }

      const fence = FENCE.exec(line);
      if (fence) {  // runs to the closing fence, or to the end while the answer is still streaming
        const body = [];
        i++;
        while (i < lines.length && !(lines[i].trim().startsWith(fence[1]) && lines[i].trim().replace(/[`~]/g, "") === "")) {
          body.push(lines[i]);
          i++;
        }
        i++;
        const lang = fence[2] ? ' data-lang="' + fence[2] + '"' : "";
        out.push("<pre" + lang + "><code>" + body.join("\n") + "</code></pre>");
        continue;
      }

      const heading = HEADING.exec(line);
      if (heading) {
        const level = heading[1].length;
        out.push("<h" + level + ">" + inline(heading[2]) + "</h" + level + ">");
        i++;
        continue;
      }

      if (RULE.test(line)) { out.push("<hr>"); i++; continue; }

      const first = listItem(line);
      if (first) {
        const items = [];
        let current = [first.text];
        i++;
        while (i < lines.length) {
          const next = listItem(lines[i]);
          if (next && next.ordered === first.ordered) {
            items.push(current);
            current = [next.text];
          } else if (!next && lines[i].trim() !== "" && /^\s+/.test(lines[i]) && !FENCE.test(lines[i])) {
            current.push(lines[i].trim());  // an indented continuation line
          } else {
            break;
          }
          i++;
        }
        items.push(current);
        const tag = first.ordered ? "ol" : "ul";
        const start = first.ordered && first.start !== 1 ? ' start="' + first.start + '"' : "";
        out.push("<" + tag + start + ">" + items.map((t) => "<li>" + inline(t.join("\n")) + "</li>").join("") + "</" + tag + ">");
        continue;
      }

      const para = [line];
      i++;
      while (i < lines.length && lines[i].trim() !== "" && !isBlockStart(lines[i])) {
        para.push(lines[i]);
        i++;
      }
      out.push("<p>" + inline(para.join("\n")) + "</p>");
    }
    return out.join("\n");
  }

  window.groundupMarkdown = { escapeHtml, renderMarkdown };
})();
