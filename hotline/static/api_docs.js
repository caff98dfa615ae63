// The API docs page: Swagger UI on the document named by #swagger-ui's data-openapi-url.
// validatorUrl null: by default Swagger UI sends the document to validator.swagger.io.
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
