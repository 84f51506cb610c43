// Package browsertest holds the status page's browser test: headless
// Chromium loads the page of a running gateway, a target goes down, and the
// page must show it after its next live refresh. It is a module of its own
// so that the root module's tests need no browser; the test fails, never
// skips, when chromium is not installed (.ci/run installs it).
package browsertest
