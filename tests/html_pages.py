# ruff: noqa: E501  (saved pages keep their long lines)
"""Saved HTML pages for tests/test_loaders.py: a documentation page, a wiki article, an article with a table."""

DOCS_PAGE = b"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Configuring the index - Radium Docs</title>
<script>window.analytics = {track: function() {}};</script><style>.nav{color:red}</style></head>
<body><header class="site-header"><a href="/">Radium Docs</a><nav class="top"><ul><li><a href="/guide">Guide</a></li><li><a href="/api">API reference</a></li><li><a href="/blog">Blog</a></li></ul></nav></header>
<div class="layout"><aside class="sidebar"><nav><ul><li><a href="/install">Installation</a></li><li><a href="/config">Configuration</a></li><li><a href="/faq">FAQ</a></li></ul></nav></aside>
<main><div class="content"><h1>Configuring the index</h1>
<div class="admonition note"><p class="admonition-title">Note</p><div>The index factory string decides how vectors are stored and searched.</div></div>
<div>An exact Flat index compares the query with every stored vector, which is precise but slow for millions of passages.</div>
<h2>Choosing nprobe</h2><div class="paragraph">With an IVF index, nprobe sets how many inverted lists a query visits; higher values find more neighbours at a higher cost.</div>
<ul><li>Start with nprobe equal to one percent of the lists.</li><li>Measure recall against an exact index before tuning further.</li></ul>
<pre><code>rag ingest docs/ --index IVF1024,Flat</code></pre></div></main></div>
<footer class="site-footer"><p>Copyright 2026 Radium Project. All rights reserved.</p><p><a href="/privacy">Privacy policy</a> | <a href="/terms">Terms of use</a></p></footer>
<script src="/static/app.js"></script></body></html>"""

WIKI_PAGE = b"""<!DOCTYPE html><html><head><title>Marie Curie - Wikipedia</title></head><body>
<div id="mw-navigation"><div id="p-navigation"><ul><li><a href="/wiki/Main_Page">Main page</a></li><li><a href="/wiki/Special:Random">Random article</a></li><li><a href="/wiki/Help:Contents">Help</a></li></ul></div></div>
<div id="content" class="mw-body" role="main"><h1 id="firstHeading">Marie Curie</h1><div id="bodyContent"><div id="siteSub">From Wikipedia, the free encyclopedia</div>
<div class="mw-parser-output"><div class="hatnote">For the film, see Marie Curie (film).</div>
<div>Marie Salomea Sk\xc5\x82odowska-Curie was a Polish and naturalised-French physicist and chemist who conducted pioneering research on radioactivity.</div>
<section><h2>Early life</h2>Sk\xc5\x82odowska was born in Warsaw, in what was then the Kingdom of Poland.<br>She studied at a clandestine university known as the Flying University.</section>
<section><h2>Discoveries</h2><div>In 1898 the Curies announced the discovery of polonium, named after Poland, and later that year of radium.</div></section>
</div></div></div>
<div id="footer"><ul><li>This page was last edited on 1 December 2026.</li><li><a href="/wiki/Privacy">Privacy policy</a></li></ul></div></body></html>"""

TABLE_PAGE = b"""<html><head><title>Radioactive elements</title></head><body><nav><a href="/">Home</a> &gt; <a href="/elements">Elements</a></nav>
<article><h1>Radioactive elements discovered by the Curies</h1><p>The Curies isolated two new elements from pitchblende ore.</p>
<table><thead><tr><th>Element</th><th>Symbol</th><th>Year</th></tr></thead><tbody><tr><td>Polonium</td><td>Po</td><td>1898</td></tr><tr><td>Radium</td><td>Ra</td><td>1898</td></tr></tbody></table>
<figure><img src="lab.jpg" alt="The laboratory"><figcaption>The shed on rue Lhomond where radium was first isolated.</figcaption></figure>
<p>Radium salts glow faintly blue in the dark.</p></article>
<footer>Subscribe to our newsletter for weekly element facts.</footer><script>trackPageView();</script></body></html>"""
