// Search over search-index.json, in the reader's browser, offline. Every field of the index
// comes from feeds: it is inserted with textContent / createElement only, never as HTML, and
// only http(s) article links and our own issue paths become links.
(function () {
  "use strict";
  var MAX_SHOWN = 100;
  var form = document.getElementById("search-form");
  var input = document.getElementById("q");
  var status = document.getElementById("status");
  var list = document.getElementById("results");
  var stories = null;

  // "Règlement" and "reglement" are the same word: decompose, drop combining marks, lower-case.
  function fold(text) {
    return String(text).normalize("NFD").replace(/[\u0300-\u036f]/g, "").toLowerCase();
  }
  function words(text) {
    return fold(text).split(/[^\p{L}\p{N}]+/u).filter(Boolean);
  }
  function haystack(values) {
    return " " + words(values.join(" ")).join(" ") + " ";
  }
  function element(tag, text, className) {
    var node = document.createElement(tag);
    if (text) { node.textContent = text; }
    if (className) { node.className = className; }
    return node;
  }
  function link(href, text) {
    var node = element("a", text);
    node.setAttribute("href", href);
    return node;
  }

  function search(query) {
    var terms = words(query);
    while (list.firstChild) { list.removeChild(list.firstChild); }
    if (!terms.length) { status.textContent = "Tapez un ou plusieurs mots."; return; }
    var hits = [];
    stories.forEach(function (story) {
      var score = 0;
      for (var i = 0; i < terms.length; i++) {
        // A query word matches the start of a word: "regl" finds "règlement".
        var inTitle = story.titleWords.indexOf(" " + terms[i]) >= 0;
        if (!inTitle && story.allWords.indexOf(" " + terms[i]) < 0) { return; }
        score += inTitle ? 3 : 1;
      }
      hits.push({ story: story, score: score });
    });
    hits.sort(function (a, b) {
      return b.score - a.score || (a.story.date < b.story.date ? 1 : a.story.date > b.story.date ? -1 : 0);
    });
    status.textContent = hits.length === 0 ? "Aucun article ne correspond à « " + query + " »."
      : hits.length + (hits.length > 1 ? " articles trouvés" : " article trouvé")
        + (hits.length > MAX_SHOWN ? " (les " + MAX_SHOWN + " plus pertinents ci-dessous)." : ".");
    hits.slice(0, MAX_SHOWN).forEach(function (hit) {
      var story = hit.story;
      var item = element("li", "", "story");
      item.appendChild(element("span", story.kicker, "kicker"));
      item.appendChild(document.createTextNode(" "));
      item.appendChild(/^https?:\/\//i.test(story.url) ? link(story.url, story.title) : element("span", story.title));
      if (story.text) { item.appendChild(element("div", story.text)); }
      var meta = element("div", story.source + " · dans le numéro du ", "meta");
      if (/^\d{4}-\d{2}-\d{2}\/index\.html$/.test(story.issue)) {
        meta.appendChild(link(story.issue, story.date_label));
      } else {
        meta.appendChild(document.createTextNode(story.date_label));
      }
      if (story.topics.length) { meta.appendChild(document.createTextNode(" · " + story.topics.join(", "))); }
      item.appendChild(meta);
      list.appendChild(item);
    });
  }

  function run() {
    var query = input.value.trim();
    var url = query ? "?q=" + encodeURIComponent(query) : location.pathname;
    history.replaceState(null, "", url);
    search(query);
  }

  form.addEventListener("submit", function (event) { event.preventDefault(); run(); });
  input.addEventListener("input", function () { if (stories) { search(input.value.trim()); } });
  input.value = new URLSearchParams(location.search).get("q") || "";
  status.textContent = "Chargement de l’index…";
  fetch("search-index.json").then(function (response) {
    if (!response.ok) { throw new Error(response.status); }
    return response.json();
  }).then(function (data) {
    stories = data.stories.map(function (story) {
      story.titleWords = haystack([story.title, story.kicker]);
      story.allWords = haystack([story.title, story.kicker, story.text, story.source].concat(story.topics));
      return story;
    });
    if (input.value.trim()) {
      search(input.value.trim());
    } else {
      status.textContent = stories.length + " articles dans les archives. Les accents et les majuscules ne comptent pas.";
    }
  }).catch(function () {
    status.textContent = "L’index de recherche n’a pas pu être chargé. Ouvrez le site par un serveur web "
      + "(par exemple « pipeline serve ») plutôt que comme fichier.";
  });
}());
