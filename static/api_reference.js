// Renders /api/v1/openapi.json with the vendored Swagger UI; kept out of the page so the CSP needs no inline script.
"use strict";

(function () {
  const root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.document,
    domNode: root,
    deepLinking: true,
    validatorUrl: null, // the badge would ask a public validator: this page must work offline
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
})();
