// The API docs page: Swagger UI on the document named by #swagger-ui's data-openapi-url.
// validatorUrl null: Swagger UI's default would send the document to validator.swagger.io
// (its badge shows in the standalone layout; ours is the base layout, but never ask it).
document.addEventListener("DOMContentLoaded", () => {
  const root = document.getElementById("swagger-ui");
  window.ui = window.SwaggerUIBundle({
    url: root.dataset.openapiUrl,
    domNode: root,
    validatorUrl: null,
    deepLinking: true,
    presets: [window.SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});
